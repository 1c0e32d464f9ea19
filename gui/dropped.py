"""What a dropped or opened path is: a model, a pipeline, or a dataset.

Decided by cheap checks (extension, a peek at JSON, folder contents) so the UI
thread stays fast; the engine's own detection runs later in a worker and gives
the real error if we guessed a model wrongly.
"""
from __future__ import annotations

from pathlib import Path

MODEL_EXT = {".onnx", ".pt", ".pth", ".pt2", ".ts", ".jit", ".safetensors", ".bin", ".ckpt", ".pkl", ".pickle"}
DATA_EXT = {".npz", ".csv", ".txt", ".tsv", ".npy"}
IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def classify(path: str | Path) -> str:
    """"model" | "pipeline" | "dataset"; unknown files are treated as models (the engine explains)."""
    p = Path(path)
    if p.is_dir():
        if (p / "config.json").exists() or any(p.glob("*.onnx")) or any(p.glob("*.safetensors")):
            return "model"
        subdirs = [d for d in p.iterdir() if d.is_dir()][:50]
        if subdirs and any(f.suffix.lower() in IMAGE_EXT for d in subdirs for f in list(d.iterdir())[:20]):
            return "dataset"
        return "model"
    ext = p.suffix.lower()
    if ext == ".json":  # the pipeline loader gives a clear message if it is not one
        return "pipeline"
    if ext in DATA_EXT:
        return "dataset"
    return "model"
