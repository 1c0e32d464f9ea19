"""Tiny language models as ONNX for the weight-only tests: the genai builder's KV-cache folder and a
plain logits export (torch.onnx of a wrapper with use_cache=False), both from one trained tiny Llama.

Until the convert step for LMs lands (core/lm/genai.py), the builder runs here as its command line.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.core import modelfiles as mf


def tiny_llama(folder: Path, train_steps: int = 60) -> tuple[Path, Path]:
    """(HF folder, its training text) — a 2-block Llama fitted briefly to real English."""
    hf = mf.hf_llama(folder / "llama", train_steps=train_steps)
    return hf, folder / "llama-corpus.txt"


def builder_onnx(hf: Path, out: Path, precision: str = "fp32") -> Path:
    """``python -m onnxruntime_genai.models.builder -i HF -o OUT -p PRECISION -e cpu``; the model.onnx path."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out),
                           "-p", precision, "-e", "cpu", "-c", str(out.parent / f".{out.name}-cache")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out / "model.onnx"


def logits_onnx(hf: Path, out: Path, seq: int = 33) -> Path:
    """A plain ``input_ids [batch, seq] → logits`` export with the tokenizer copied beside it."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from slimline.core.onnx_export import export_torch_to_onnx

    class Logits(torch.nn.Module):
        def __init__(self, lm: torch.nn.Module) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.lm(input_ids=input_ids, use_cache=False).logits

    out.mkdir(parents=True, exist_ok=True)
    lm = AutoModelForCausalLM.from_pretrained(str(hf)).eval()
    path = out / "model.onnx"
    export_torch_to_onnx(Logits(lm).eval(), {"input_ids": torch.zeros(1, seq, dtype=torch.long)}, path,
                         input_names=["input_ids"], output_names=["logits"])
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        shutil.copyfile(hf / name, out / name)
    return path
