"""open_model and the loaders that turn a handle into something runnable or editable.

All of them dispatch through the table in :mod:`slimline.core.models.formats`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from slimline.core.errors import ModelLoadError, SlimlineError
from slimline.core.handle import ModelHandle
from slimline.core.models.formats import WEIGHTS_ONLY, ModelFormat, format_for_kind, format_named
from slimline.core.models.handles import require_trust
from slimline.core.models.sniff import sniff_path

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _open(path: Path, trust: bool) -> ModelHandle:
    if path.is_dir() and not (path / "config.json").is_file() and (path / "genai_config.json").is_file():
        from slimline.core.lm.genai import genai_onnx_name

        path = path / genai_onnx_name(path)  # an onnxruntime-genai folder: its decoder ONNX is the model
    fmt = format_for_kind(sniff_path(path), path)
    if fmt.open is None:  # pragma: no cover - every detectable format has an opener
        raise ModelLoadError(f"no opener for format {fmt.name!r}", subject=str(path))
    return fmt.open(path, trust)


def open_model(path: str | Path, *, trust: bool = False) -> ModelHandle:
    """Open any supported model file or folder as a handle; the format is detected by content.

    Raises ModelLoadError (or UntrustedFileError for pickles/.pt2 without ``trust``; for an
    untrusted .pt2 the error's ``handle`` attribute is a weights-only handle for inspection).
    """
    p = Path(path).expanduser()
    try:
        return _open(p, trust)
    except SlimlineError:
        raise
    except MemoryError:
        raise ModelLoadError("not enough memory to open the model", subject=str(p),
                             hint="close other programs or open a smaller model") from None
    except Exception as exc:  # noqa: BLE001 - the user sees a message, never a traceback
        first = (str(exc).splitlines() or [""])[0][:300]
        raise ModelLoadError(f"could not open the model ({type(exc).__name__}: {first})", subject=str(p),
                             hint="the file may be corrupt or from an unsupported exporter; "
                                  "re-export it as ONNX and try again") from None


def _row(handle: ModelHandle) -> ModelFormat:
    return format_named(handle.format, handle.path)


def load_torch_runnable(handle: ModelHandle) -> "torch.nn.Module":
    """A fresh runnable torch module in eval mode (TorchScript, trusted .pt2/pickle, archive, HF)."""
    fmt = _row(handle)
    if fmt.needs_trust:
        require_trust(handle)
    if handle.family == "weights":
        raise WEIGHTS_ONLY.error(handle)
    if fmt.runnable is None:
        raise fmt.not_runnable.error(handle)
    return fmt.runnable(handle)


def load_eager_module(handle: ModelHandle) -> "torch.nn.Module":
    """A fresh editable nn.Module (Slimline archive, HF folder, trusted pickle), in eval mode."""
    fmt = _row(handle)
    if fmt.eager is None:
        raise (fmt.not_editable or fmt.not_runnable).error(handle)
    if fmt.needs_trust:
        require_trust(handle)
    return fmt.eager(handle)


def to_slimline_archive(handle: ModelHandle, out_path: str | Path) -> ModelHandle:
    """Convert an HF folder or a trusted pickled module to a Slimline archive (reloads without pickle)."""
    fmt = _row(handle)
    if fmt.to_archive is None:
        raise ModelLoadError(f"a {fmt.name} model cannot be converted to a Slimline archive",
                             subject=handle.path,
                             hint="only Hugging Face folders and trusted pickled modules convert; "
                                  "TorchScript and .pt2 convert to ONNX instead")
    if fmt.needs_trust:
        require_trust(handle)
    return fmt.to_archive(handle, Path(out_path))
