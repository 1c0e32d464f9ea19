"""open_model and the loaders that turn a handle into something runnable or editable."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from slimline.core.errors import ModelLoadError, SlimlineError, UntrustedFileError
from slimline.core.handle import ModelHandle
from slimline.core.models.detect import detect_format
from slimline.core.models.torch_files import TRUST_HINT, WEIGHTS_ONLY_REASON

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _open_safetensors(path: Path) -> ModelHandle:
    from slimline.core.models.torch_files import _weights_handle
    from slimline.core.models.weights import read_safetensors_header, safetensors_source

    src = safetensors_source([path])
    meta = read_safetensors_header(path).get("__metadata__") or {}
    return _weights_handle(path, "safetensors", src.entries, "safetensors",
                           meta={"metadata": {k: str(v)[:200] for k, v in list(meta.items())[:20]}})


def _open_archive(path: Path) -> ModelHandle:
    from slimline.core.torchmodel import handle_for_archive

    try:
        return handle_for_archive(path)
    except SlimlineError:
        raise
    except Exception as exc:  # noqa: BLE001 - damaged metadata JSON and friends
        raise ModelLoadError(f"the Slimline archive's metadata is damaged ({type(exc).__name__}: {exc})",
                             subject=str(path), hint="re-create the archive from its source model") from None


def _open(path: Path, trust: bool) -> ModelHandle:
    fmt = detect_format(path)
    if fmt == "onnx":
        from slimline.core.models.onnx_files import open_onnx

        return open_onnx(path)
    if fmt == "torchscript":
        from slimline.core.models.torch_files import open_torchscript

        return open_torchscript(path)
    if fmt == "torch_export":
        from slimline.core.models.torch_files import open_pt2, pt2_weights_listing_handle

        try:
            return open_pt2(path, trust)
        except UntrustedFileError as exc:
            # let callers show the weights while they ask the user (nothing was unpickled)
            exc.handle = pt2_weights_listing_handle(path)  # type: ignore[attr-defined]
            raise
    if fmt == "state_dict":
        from slimline.core.models.torch_files import open_checkpoint

        return open_checkpoint(path, trust)
    if fmt == "safetensors":
        return _open_safetensors(path)
    if fmt == "slimline_torch":
        return _open_archive(path)
    if fmt == "hf":
        from slimline.core.models.hf import open_hf

        return open_hf(path)
    raise ModelLoadError(f"no opener for format {fmt!r}", subject=str(path))  # pragma: no cover


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


def _not_runnable(handle: ModelHandle) -> ModelLoadError:
    if handle.format == "onnx":
        return ModelLoadError("ONNX models run with onnxruntime, not torch", subject=handle.path,
                              hint="use slimline.core.runtime.open_session, or pick an ONNX step")
    return ModelLoadError(WEIGHTS_ONLY_REASON, subject=handle.path,
                          hint="open the model's ONNX/TorchScript file, HF folder or Slimline archive")


def _require_trust(handle: ModelHandle) -> None:
    if not handle.trusted:
        raise UntrustedFileError("loading this file unpickles data, which can run code from the file",
                                 subject=handle.path, hint=f"Trust it {TRUST_HINT}")


def load_torch_runnable(handle: ModelHandle) -> "torch.nn.Module":
    """A fresh runnable torch module in eval mode (TorchScript, trusted .pt2/pickle, archive, HF)."""
    path = Path(handle.path)
    fmt = handle.format
    if fmt in ("torch_export", "pickle_module"):
        _require_trust(handle)
    if handle.family == "weights":
        raise _not_runnable(handle)
    if fmt == "torchscript":
        from slimline.core.models.torch_files import load_torchscript

        return load_torchscript(path, fresh=True)
    if fmt == "torch_export":
        from slimline.core.models.torch_files import load_pt2_module

        _require_trust(handle)
        return load_pt2_module(path, fresh=True)
    if fmt in ("slimline_torch", "hf", "pickle_module"):
        return load_eager_module(handle)
    raise _not_runnable(handle)


def load_eager_module(handle: ModelHandle) -> "torch.nn.Module":
    """A fresh editable nn.Module (Slimline archive, HF folder, trusted pickle), in eval mode."""
    path = Path(handle.path)
    fmt = handle.format
    if fmt == "slimline_torch":
        from slimline.core.torchmodel import load_torch_module

        return load_torch_module(path)
    if fmt == "hf":
        from slimline.core.models.hf import load_hf_module

        return load_hf_module(handle)
    if fmt == "pickle_module":
        from slimline.core.models.torch_files import load_pickle_module

        _require_trust(handle)
        return load_pickle_module(path)
    if fmt == "torchscript":
        raise ModelLoadError("TorchScript can be run, measured and converted to ONNX but not edited",
                             subject=handle.path,
                             hint="to compress it, convert it to ONNX first or open the original model "
                                  "(HF folder or Slimline archive)")
    if fmt == "torch_export":
        raise ModelLoadError("a torch.export (.pt2) program cannot be edited (its modules are restricted)",
                             subject=handle.path,
                             hint="convert it to ONNX first, or open the eager model it was exported from")
    raise _not_runnable(handle)


def to_slimline_archive(handle: ModelHandle, out_path: str | Path) -> ModelHandle:
    """Convert an HF folder or a trusted pickled module to a Slimline archive (reloads without pickle)."""
    from slimline.core.fsutil import atomic_path
    from slimline.core.torchmodel import handle_for_archive, save_torch_module

    out = Path(out_path)
    fmt = handle.format
    if fmt == "slimline_torch":
        import shutil

        with atomic_path(out) as tmp:
            shutil.copyfile(handle.path, tmp)
        return handle_for_archive(out)
    if fmt == "hf":
        from slimline.core.models.hf import hf_base, load_hf_module

        module = load_hf_module(handle)
        return save_torch_module(module, out, inputs=handle.inputs, outputs=handle.outputs,
                                 base=hf_base(handle, module),
                                 extra_meta={"source_format": "hf", "source": Path(handle.path).name})
    if fmt == "pickle_module":
        from slimline.core.models.torch_files import load_pickle_module

        _require_trust(handle)
        module = load_pickle_module(Path(handle.path))
        try:
            return save_torch_module(module, out, inputs=handle.inputs, outputs=handle.outputs,
                                     extra_meta={"source_format": "pickle_module", "source": Path(handle.path).name})
        except ModelLoadError as exc:
            raise ModelLoadError(f"cannot convert to a Slimline archive: {exc.message}", subject=handle.path,
                                 hint=exc.hint) from None
    raise ModelLoadError(f"a {fmt} model cannot be converted to a Slimline archive",
                         subject=handle.path,
                         hint="only Hugging Face folders and trusted pickled modules convert; "
                              "TorchScript and .pt2 convert to ONNX instead")
