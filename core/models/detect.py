"""Format detection by content (magic bytes, zip member names, headers), not by extension.

The bytes are read by :mod:`slimline.core.models.sniff`; the table of formats turns the
sniffed kind into a format name (a Slimline archive is a safetensors file that the archive
row claims). Nothing here imports torch or onnx.
"""
from __future__ import annotations

from pathlib import Path

from slimline.core.models.formats import format_for_kind
from slimline.core.models.sniff import sniff_path


def detect_format(path: str | Path) -> str:
    """Format by content: onnx | torchscript | torch_export | state_dict | safetensors | hf | slimline_torch | gguf.

    ``state_dict`` is reported for any torch checkpoint (zip or legacy); whether it really
    holds only tensors (or is a pickled module, ``pickle_module``) is decided when it is
    opened with the restricted unpickler. Raises ModelLoadError for anything that is not a
    model Slimline can open.
    """
    p = Path(path)
    return format_for_kind(sniff_path(p), p).name
