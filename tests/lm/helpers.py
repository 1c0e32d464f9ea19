"""Shared LM test helpers: a tiny trained Llama, its genai and logits-only ONNX forms, inline LM runs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

SMALL = {"window_length": 32, "window_count": 6, "max_new_tokens": 8}


def logits_onnx(hf_dir: Path, out: Path, seq: int = 40) -> Path:
    """A logits-only ONNX (input_ids → logits) with a fixed sequence length, as a plain torch export gives."""
    import torch
    from transformers import AutoModelForCausalLM

    from slimline.core.onnx_export import export_torch_to_onnx

    class Logits(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: Any) -> Any:
            return self.m(input_ids=input_ids, use_cache=False).logits

    model = AutoModelForCausalLM.from_pretrained(str(hf_dir)).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    export_torch_to_onnx(Logits(model).eval(), {"input_ids": torch.ones(1, seq, dtype=torch.int64)}, out,
                         input_names=["input_ids"], output_names=["logits"])
    return out


def pipeline(steps: list[dict[str, Any]] | None = None, **lm: Any) -> Any:
    from slimline.core.pipeline import parse_pipeline

    return parse_pipeline({"format": "slimline.pipeline", "schema_version": 1, "name": "lm-test",
                           "steps": steps or [], "evaluation": {"lm": {**SMALL, **lm}}})


def run_inline(model_dir: Path, text: Path, workspace: Path, steps: list[dict[str, Any]] | None = None,
               use_cache: bool = True, **lm: Any) -> Any:
    """An LM run in this process (no job): the RunRecord."""
    from slimline.core.models import open_model
    from slimline.core.runner import load_data, run_pipeline

    pipe = pipeline(steps, **lm)
    model = open_model(model_dir)
    data = load_data(pipe, model, str(text), None)
    return run_pipeline(pipe, model, workspace=workspace, emit=lambda _e: None, data=data, threads=1,
                        data_paths=(str(text), None), use_cache=use_cache)
