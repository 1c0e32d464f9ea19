"""Torch model in/out and size reporting shared by the prune and low-rank plugins.

Why here: both plugin families load a torch model from a handle, write it back as a
Slimline archive that reloads without pickle, and report the compressed size, so the
rules live in one place (no heavy imports at module level).
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimline.core.errors import StepFailed
from slimline.core.handle import ModelHandle

if TYPE_CHECKING:  # pragma: no cover
    import torch


def model_files(handle: ModelHandle) -> list[Path]:
    """Every file that makes up the model (external data included)."""
    files = [Path(f) for f in (handle.files or [handle.path])]
    return [f for f in files if f.is_file()]


def files_bytes(paths: Iterable[Path]) -> int:
    return sum(Path(p).stat().st_size for p in paths)


def zip_bytes(paths: Iterable[Path], level: int = 6) -> int:
    """Size after zlib (deflate, the zip codec) at ``level`` over all files, streamed."""
    total = 0
    for p in paths:
        comp = zlib.compressobj(level)
        n = 0
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                n += len(comp.compress(chunk))
        n += len(comp.flush())
        total += n
    return total


# --- torch models -------------------------------------------------------------------------
def load_module(handle: ModelHandle) -> "torch.nn.Module":
    """An editable eager module for any torch handle (Slimline archive, HF folder, trusted pickle)."""
    from slimline.core.models import load_eager_module

    return load_eager_module(handle)


def archive_layout(handle: ModelHandle, module: "torch.nn.Module") -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(base, replacements) to save an edited copy of ``handle``.

    Spec-based archives get ``base=None`` (a fresh spec tree captures new submodules);
    HF-based archives keep their base and earlier replacements so the loader can
    rebuild the same class.
    """
    if handle.format == "slimline_torch":
        from slimline.core.torchmodel import read_archive_meta

        meta = read_archive_meta(handle.path)
        arch = (meta or {}).get("arch", {})
        base = arch.get("base", {})
        if base.get("kind") == "spec":
            return None, {}
        return base, dict(arch.get("replacements", {}))
    if handle.format == "hf":
        from slimline.core.models.hf import hf_base

        return hf_base(handle, module), {}
    return None, {}


def save_module(module: "torch.nn.Module", handle: ModelHandle, path: Path, *,
                replacements: dict[str, Any] | None = None, extra_meta: dict[str, Any] | None = None) -> ModelHandle:
    """Save as a Slimline archive (atomic); keep the input's I/O specs and base architecture."""
    from slimline.core.torchmodel import save_torch_module

    base, old_repl = archive_layout(handle, module)
    repl = None
    if base is not None:
        repl = {**old_repl, **(replacements or {})}
    extra: dict[str, Any] = {}
    if handle.format == "slimline_torch":
        from slimline.core.torchmodel import read_archive_meta

        extra = dict((read_archive_meta(handle.path) or {}).get("extra", {}))
    extra.update(extra_meta or {})
    return save_torch_module(module.eval(), path, inputs=handle.inputs, outputs=handle.outputs,
                             base=base, replacements=repl, extra_meta=extra)


def example_inputs(handle: ModelHandle, batch: int = 1) -> Any:
    """Zero tensors shaped like the model inputs: a tensor for one input, a dict for several."""
    import torch

    if not handle.inputs:
        raise StepFailed("the model declares no inputs, so it cannot be traced", subject=handle.path,
                         hint="re-open the model and set its input shapes")
    feeds: dict[str, Any] = {}
    for spec in handle.inputs:
        shape = spec.concrete_shape(handle.dim_defaults, batch=batch)
        if spec.dtype.startswith(("int", "uint")) or spec.dtype == "bool":
            feeds[spec.name] = torch.zeros(shape, dtype=torch.long)
        else:
            feeds[spec.name] = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    if len(feeds) == 1:
        return next(iter(feeds.values()))
    return feeds


def forward(module: "torch.nn.Module", inputs: Any) -> Any:
    """Call a module with a tensor or a dict of named inputs."""
    if isinstance(inputs, dict):
        return module(**inputs)
    return module(inputs)


def first_tensor(out: Any) -> "torch.Tensor":
    """The first tensor of a model output (tensor, tuple, dict or HF ModelOutput)."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict) or hasattr(out, "values"):
        for v in out.values():
            if isinstance(v, torch.Tensor):
                return v
    if isinstance(out, (list, tuple)):
        for v in out:
            if isinstance(v, torch.Tensor):
                return v
    raise StepFailed("the model returned no tensor", hint="check the model's forward() output")


def batch_feeds(handle: ModelHandle, feeds: dict[str, Any]) -> Any:
    """Dataset feeds (numpy) → torch inputs in the form ``forward`` expects."""
    import numpy as np
    import torch

    out: dict[str, Any] = {}
    for spec in handle.inputs:
        if spec.name not in feeds:
            continue
        arr = np.asarray(feeds[spec.name])
        t = torch.from_numpy(np.ascontiguousarray(arr))
        if t.is_floating_point():
            t = t.float()
        out[spec.name] = t
    if not out:
        raise StepFailed(f"the dataset has none of the model inputs {[s.name for s in handle.inputs]}",
                         hint="load a dataset whose arrays are named like the model inputs")
    if len(out) == 1 and len(handle.inputs) == 1:
        return next(iter(out.values()))
    return out


def output_layer_name(module: "torch.nn.Module", inputs: Any) -> str | None:
    """Name of the last Linear/Conv layer to run in forward: the one producing the output."""
    import torch
    import torch.nn as nn

    order: list[str] = []
    hooks = []
    for name, mod in module.named_modules():
        if isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)) or type(mod).__name__ == "Conv1D":
            hooks.append(mod.register_forward_hook(lambda m, i, o, n=name: order.append(n)))
    try:
        with torch.no_grad():
            forward(module, inputs)
    finally:
        for h in hooks:
            h.remove()
    return order[-1] if order else None
