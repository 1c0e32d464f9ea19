"""Zero-copy access to any opened model's weight tensors, for the layer table and statistics.

:func:`weight_source` dispatches through the table of formats; the tensor primitives
themselves (TensorEntry, WeightSource, readers, the file-identity cache) live in
:mod:`slimline.core.models.tensors` and are re-exported here for existing callers.
"""
from __future__ import annotations

from pathlib import Path

from slimline.core.errors import ModelLoadError
from slimline.core.handle import ModelHandle
from slimline.core.models.formats import format_named
from slimline.core.models.tensors import (
    RAW_ENCODED,
    SAFETENSORS_DTYPES,
    TensorEntry,
    WeightSource,
    cached,
    clear_cache,
    decode_bfloat16,
    decode_float8,
    file_key,
    file_size,
    module_op_types,
    module_source,
    read_safetensors_header,
    safetensors_source,
    tensor_dict_source,
)

__all__ = ["weight_source", "RAW_ENCODED", "SAFETENSORS_DTYPES", "TensorEntry", "WeightSource", "cached",
           "clear_cache", "decode_bfloat16", "decode_float8", "file_key", "file_size", "module_op_types",
           "module_source", "read_safetensors_header", "safetensors_source", "tensor_dict_source"]


def weight_source(handle: ModelHandle) -> WeightSource:
    """The (cached) weight source of any opened model."""
    fmt = handle.format
    path = Path(handle.path)
    key = file_key(path, f"weights:{fmt}:{handle.trusted}") if path.is_file() else (
        f"weights:{fmt}", str(path.resolve()), tuple(file_key(f) for f in handle.files if Path(f).is_file()))
    return cached(key, lambda: _build_source(handle))


def _build_source(handle: ModelHandle) -> WeightSource:
    row = format_named(handle.format, handle.path)
    if row.weights is None:  # pragma: no cover - every format in the table lists its weights
        raise ModelLoadError(f"no weight reader for format {handle.format!r}", subject=handle.path)
    return row.weights(handle)
