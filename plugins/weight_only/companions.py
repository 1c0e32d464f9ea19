"""Files that travel with an ONNX LM: genai_config.json, tokenizer files, chat template, HF configs.

A weight-only step rewrites only the model; the folder must stay usable as it was (onnxruntime-genai
reads genai_config.json and the tokenizer from the model's folder), so these files are copied beside
the output. Weights of other formats and other ONNX files are not companions.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from slimline.core.fsutil import atomic_path

NOT_COMPANIONS = (".onnx", ".data", ".onnx_data", ".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt",
                  ".msgpack", ".h5", ".npz", ".npy", ".tmp")
MAX_BYTES = 64 << 20  # a tokenizer is a few MB; anything bigger is not one


def copy_companions(src: Path, dst: Path, skip: set[str]) -> list[str]:
    """Copy the companion files of ``src`` into ``dst`` (atomically each); their names."""
    if src.resolve() == dst.resolve():
        return []
    copied: list[str] = []
    for f in sorted(src.iterdir()):
        if (not f.is_file() or f.name in skip or f.name.startswith(".") or f.suffix.lower() in NOT_COMPANIONS
                or f.name == "weight_only.json" or f.stat().st_size > MAX_BYTES):
            continue
        with atomic_path(dst / f.name) as tmp:
            shutil.copyfile(f, tmp)
        copied.append(f.name)
    return copied
