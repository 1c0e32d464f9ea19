"""Slimline torch archives: a safetensors file whose metadata records the architecture.

They reload without pickle (the architecture is rebuilt from the recorded spec tree or HF
config), so they are runnable and editable without asking for trust.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimline.core.errors import ModelLoadError, SlimlineError
from slimline.core.handle import ModelHandle
from slimline.core.models.hf import hf_op_types_from_config
from slimline.core.models.tensors import WeightSource, read_safetensors_header, safetensors_source

if TYPE_CHECKING:  # pragma: no cover
    import torch


def is_slimline_archive(path: Path) -> bool:
    """True for a safetensors file written by Slimline (``slimline.format`` metadata)."""
    header = read_safetensors_header(path)
    return (header.get("__metadata__") or {}).get("slimline.format", "").startswith("slimline_torch/")


def archive_open(path: Path, trust: bool) -> ModelHandle:
    del trust  # archives never unpickle
    from slimline.core.torchmodel import handle_for_archive

    try:
        return handle_for_archive(path)
    except SlimlineError:
        raise
    except Exception as exc:  # noqa: BLE001 - damaged metadata JSON and friends
        raise ModelLoadError(f"the Slimline archive's metadata is damaged ({type(exc).__name__}: {exc})",
                             subject=str(path), hint="re-create the archive from its source model") from None


def archive_weights(handle: ModelHandle) -> WeightSource:
    path = Path(handle.path)
    return safetensors_source([path], _archive_op_types(path))


def archive_eager(handle: ModelHandle) -> "torch.nn.Module":
    from slimline.core.torchmodel import load_torch_module

    return load_torch_module(Path(handle.path))


def archive_copy(handle: ModelHandle, out: Path) -> ModelHandle:
    """'Converting' an archive to an archive is an atomic copy."""
    import shutil

    from slimline.core.fsutil import atomic_path
    from slimline.core.torchmodel import handle_for_archive

    with atomic_path(out) as tmp:
        shutil.copyfile(handle.path, tmp)
    return handle_for_archive(out)


def _archive_op_types(path: Path) -> dict[str, str]:
    """Layer path → class name from a Slimline archive's spec tree (no torch needed)."""
    meta = read_safetensors_header(path).get("__metadata__") or {}
    try:
        arch = json.loads(meta.get("slimline.arch", "{}"))
    except ValueError:
        return {}
    out: dict[str, str] = {}

    def walk(tree: dict[str, Any], prefix: str) -> None:
        if not isinstance(tree, dict):
            return
        if "type" in tree:
            out[prefix] = str(tree["type"])
        for name, child in (tree.get("children") or {}).items():
            walk(child, f"{prefix}.{name}" if prefix else str(name))

    base = arch.get("base") or {}
    if base.get("kind") == "spec":
        walk(base.get("tree") or {}, "")
    for sub, tree in (arch.get("replacements") or {}).items():
        walk(tree, sub)
    if base.get("kind") == "hf":
        out.update(hf_op_types_from_config(base.get("config") or {}, base.get("auto_class") or "AutoModel"))
    return out
