"""Plain safetensors files: tensors without an architecture (inspect only).

A Slimline archive is also a safetensors file; :mod:`slimline.core.models.archive` claims
those first (by their metadata), so what reaches this module is weights only.
"""
from __future__ import annotations

from pathlib import Path

from slimline.core.handle import ModelHandle
from slimline.core.models.handles import weights_handle
from slimline.core.models.tensors import WeightSource, read_safetensors_header, safetensors_source


def safetensors_open(path: Path, trust: bool) -> ModelHandle:
    del trust  # safetensors never runs code
    src = safetensors_source([path])
    meta = read_safetensors_header(path).get("__metadata__") or {}
    return weights_handle(path, "safetensors", src.entries, "safetensors",
                          meta={"metadata": {k: str(v)[:200] for k, v in list(meta.items())[:20]}})


def safetensors_weights(handle: ModelHandle) -> WeightSource:
    return safetensors_source([Path(handle.path)])
