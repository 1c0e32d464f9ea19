"""Feeding dataset arrays to torch modules and reading their logits back.

Shared by the teacher and the student so both see the data the same way.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from slimline.core.errors import StepFailed

if TYPE_CHECKING:  # pragma: no cover
    import torch

STEP = "distill"


def input_order(data_inputs: dict[str, np.ndarray], model_inputs: list[str]) -> list[str]:
    """Dataset input names in the order the model takes them.

    Model inputs present in the data are used in the model's order (optional
    ones such as an attention mask may be missing); a single input whose name
    does not match is fed positionally, since .npz keys rarely match exported names.
    """
    names = list(data_inputs)
    present = [n for n in model_inputs if n in data_inputs]
    if present:
        return present
    if len(names) == 1:
        return names
    raise StepFailed(
        f"the data has inputs {names} but the model expects {model_inputs}",
        hint="name the dataset's arrays after the model inputs (see the model's input table)",
        subject=STEP)


def as_model_array(a: np.ndarray) -> np.ndarray:
    """float64 (CSV, pandas) → float32; other dtypes pass through."""
    return a.astype(np.float32) if a.dtype == np.float64 else a


def call_module(module: "torch.nn.Module", feeds: dict[str, "torch.Tensor"]) -> "torch.Tensor":
    """One input → positional call; several → keyword call (HF style). Returns logits."""
    if len(feeds) == 1:
        out = module(next(iter(feeds.values())))
    else:
        out = module(**feeds)
    return pick_logits(out)


def pick_logits(out: Any) -> "torch.Tensor":
    """Logits from a tensor, an HF ModelOutput (.logits), a dict or a tuple."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, dict) and out:
        v = out.get("logits", next(iter(out.values())))
        return pick_logits(v)
    if isinstance(out, (tuple, list)) and out:
        return pick_logits(out[0])
    raise StepFailed(f"the model returned {type(out).__name__}, not logits",
                     hint="the distill step needs a model whose (first) output is the class logits",
                     subject=STEP)
