"""Handle helpers shared by the per-format modules: weights-only handles and the trust gate.

Lives below the per-format modules so that safetensors, checkpoints and untrusted .pt2
listings build the same weights-only handle, and every loader that unpickles asks for
trust the same way, without the format modules importing each other.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from slimline.core.errors import UntrustedFileError
from slimline.core.handle import Capabilities, ModelHandle
from slimline.core.models.tensors import WEIGHT, TensorEntry, file_size

TRUST_HINT = ("only if you trust where it came from: open it with --trust (CLI) or confirm the trust dialog "
              "(GUI). Safer: export it as ONNX, TorchScript, a state_dict or safetensors")
WEIGHTS_ONLY_REASON = ("weights only: inspect yes; run, measure, compress need an architecture — open the "
                       "ONNX/TorchScript/HF folder or a Slimline archive")
WEIGHTS_ONLY_HINT = "open the model's ONNX/TorchScript file, HF folder or Slimline archive"


def weights_handle(path: Path, fmt: str, entries: list[TensorEntry], producer: str,
                   files: list[Path] | None = None, meta: dict[str, Any] | None = None) -> ModelHandle:
    """A handle for a file that holds tensors but no architecture (inspect only)."""
    files = files or [path]
    return ModelHandle(
        path=str(path), format=fmt, family="weights", files=[str(f) for f in files],
        param_count=sum(e.numel for e in entries if e.kind == WEIGHT and not e.name.endswith("num_batches_tracked")),
        bytes_on_disk=sum(file_size(f) for f in files), producer=producer, trusted=True,
        capabilities=Capabilities(run=False, compress=False, reason=WEIGHTS_ONLY_REASON),
        meta={"tensors": sum(1 for e in entries if e.kind == WEIGHT),
              "other_tensors": sum(1 for e in entries if e.kind != WEIGHT), **(meta or {})},
    )


def require_trust(handle: ModelHandle) -> None:
    """Refuse to unpickle from a handle the user has not trusted."""
    if not handle.trusted:
        raise UntrustedFileError("loading this file unpickles data, which can run code from the file",
                                 subject=handle.path, hint=f"Trust it {TRUST_HINT}")
