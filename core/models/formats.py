"""The table of model formats: what each one can do, and which function does it.

Detection, opening, weight listing, running and editing all dispatch through
:data:`FORMATS` instead of per-function if-chains, so adding a format means one module
with its functions and one row here. The per-format modules below never import this
table or each other's dispatch, which keeps the package's import graph acyclic
(tests/core/test_models_layering.py enforces it).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from slimline.core.errors import ModelLoadError
from slimline.core.handle import ModelHandle
from slimline.core.models import archive, gguf, hf, onnx_files, safetensors_files, torch_files
from slimline.core.models.handles import WEIGHTS_ONLY_HINT, WEIGHTS_ONLY_REASON
from slimline.core.models.tensors import WeightSource

if TYPE_CHECKING:  # pragma: no cover
    import torch

Opener = Callable[[Path, bool], ModelHandle]
ModuleLoader = Callable[[ModelHandle], "torch.nn.Module"]


@dataclass(frozen=True)
class Refusal:
    """Why an operation is not available for a format, and what to do instead."""

    message: str
    hint: str

    def error(self, handle: ModelHandle) -> ModelLoadError:
        return ModelLoadError(self.message, subject=handle.path, hint=self.hint)


WEIGHTS_ONLY = Refusal(WEIGHTS_ONLY_REASON, WEIGHTS_ONLY_HINT)


@dataclass(frozen=True)
class ModelFormat:
    """One row of the table. A ``None`` callable means the format cannot do that.

    ``sniffed_as``: the raw kinds (:mod:`slimline.core.models.sniff`) this format accepts;
    ``claims`` narrows a shared kind (a Slimline archive is also safetensors). ``needs_trust``:
    loading a module unpickles, so the handle must be trusted first.
    """

    name: str
    sniffed_as: tuple[str, ...] = ()
    claims: Callable[[Path], bool] | None = None
    open: Opener | None = None
    weights: Callable[[ModelHandle], WeightSource] | None = None
    runnable: ModuleLoader | None = None
    eager: ModuleLoader | None = None
    to_archive: Callable[[ModelHandle, Path], ModelHandle] | None = None
    needs_trust: bool = False
    not_runnable: Refusal = WEIGHTS_ONLY
    not_editable: Refusal | None = None   # None: same as not_runnable


_ONNX_NOT_TORCH = Refusal("ONNX models run with onnxruntime, not torch",
                          "use slimline.core.runtime.open_session, or pick an ONNX step")

# Order matters for detection: a format with ``claims`` is tried before the plain one sharing its kind.
FORMATS: dict[str, ModelFormat] = {f.name: f for f in (
    ModelFormat("onnx", ("onnx",), open=onnx_files.onnx_open, weights=onnx_files.onnx_weights,
                not_runnable=_ONNX_NOT_TORCH),
    ModelFormat("torchscript", ("torchscript",), open=torch_files.torchscript_open,
                weights=torch_files.torchscript_weights, runnable=torch_files.torchscript_runnable,
                not_editable=Refusal("TorchScript can be run, measured and converted to ONNX but not edited",
                                     "to compress it, convert it to ONNX first or open the original model "
                                     "(HF folder or Slimline archive)")),
    ModelFormat("torch_export", ("torch_export",), open=torch_files.pt2_open, weights=torch_files.pt2_weights,
                runnable=torch_files.pt2_runnable, needs_trust=True,
                not_editable=Refusal("a torch.export (.pt2) program cannot be edited (its modules are restricted)",
                                     "convert it to ONNX first, or open the eager model it was exported from")),
    ModelFormat("state_dict", ("torch_save", "pickle"), open=torch_files.checkpoint_open,
                weights=torch_files.state_dict_weights),
    ModelFormat("pickle_module", (), weights=torch_files.pickle_module_weights,
                runnable=torch_files.pickle_module_eager, eager=torch_files.pickle_module_eager,
                to_archive=torch_files.pickle_module_to_archive, needs_trust=True),
    ModelFormat("slimline_torch", ("safetensors",), claims=archive.is_slimline_archive, open=archive.archive_open,
                weights=archive.archive_weights, runnable=archive.archive_eager, eager=archive.archive_eager,
                to_archive=archive.archive_copy),
    ModelFormat("safetensors", ("safetensors",), open=safetensors_files.safetensors_open,
                weights=safetensors_files.safetensors_weights),
    ModelFormat("hf", ("hf_folder",), open=hf.hf_open, weights=hf.hf_weight_source, runnable=hf.load_hf_module,
                eager=hf.load_hf_module, to_archive=hf.hf_to_archive),
    # opens as the "hf" handle of its dequantized float folder, so every other operation is the hf row's
    ModelFormat("gguf", ("gguf",), open=gguf.gguf_open),
)}


def format_named(name: str, subject: str = "") -> ModelFormat:
    """The row for ``name``; ModelLoadError for a name the table does not know."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ModelLoadError(f"unknown model format {name!r}", subject=subject,
                             hint="re-open the model file so its format is detected again") from None


def format_for_kind(kind: str, path: Path) -> ModelFormat:
    """The format for a sniffed kind: the first row that accepts the kind and claims the file."""
    for f in FORMATS.values():
        if kind in f.sniffed_as and (f.claims is None or f.claims(path)):
            return f
    raise ModelLoadError(f"no format handles {kind!r} files", subject=str(path))  # pragma: no cover
