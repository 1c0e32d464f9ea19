"""torch -> ONNX: the one exporter call for the Convert step and ``slimline export``.

Why one owner: the exporter has sharp edges that both callers must get right the
same way (see DESIGN §10): a dynamic batch needs an example of at least 2 rows; the
torch.export-based exporter writes a separate ``.data`` file unless told otherwise;
an opset below 18 may silently come out as 18 (so the written opset is read back);
protobuf cannot hold 2 GiB, so big models need external data. Failures keep the
exporter's full message and the chain of causes, because the first line ("Failed to
export the model with torch.export") rarely names the real reason.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from slimline.core.errors import SlimlineError
from slimline.core.fsutil import atomic_path

# protobuf cannot serialise a model of 2 GiB or more: weights go to an external file well before.
EXTERNAL_DATA_LIMIT = 2 * 1024**3 - 64 * 1024**2
Exporter = Literal["dynamo", "legacy"]


class OnnxExportFailed(SlimlineError):
    """torch.onnx.export raised; ``message`` holds the exporter's full text and its causes."""


@dataclass
class OnnxExportResult:
    path: Path
    exporter: str
    opset: int             # the opset the written file declares (may differ from the one asked for)
    external_data: bool    # weights in ``<stem>.data`` beside the file
    dynamic_inputs: list[str]


def onnx_opset(path: str | Path) -> int:
    """The default-domain opset a file declares (0 when none)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def save_onnx(model: Any, path: Path, external: bool) -> None:
    """Write a ModelProto as one file, or with every weight in ``<stem>.data`` beside it.

    The .onnx file appears atomically, after its data file is complete.
    """
    import onnx

    if external:  # onnx appends to an existing data file: start from an empty one
        path.with_suffix(".data").unlink(missing_ok=True)
    with atomic_path(path) as tmp:
        if external:
            onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=path.with_suffix(".data").name, size_threshold=1024)
        else:
            onnx.save_model(model, str(tmp))


def param_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers (0 for objects without them)."""
    if not hasattr(module, "parameters"):
        return 0
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def exporter_message(exc: BaseException) -> str:
    """The exporter's full message plus every distinct cause below it (the real reason is often there)."""
    parts: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        text = str(cur).strip() or type(cur).__name__
        if not any(text in p for p in parts):
            parts.append(text if cur is exc else f"caused by {type(cur).__name__}: {text}")
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    return "\n".join(parts)


def _batch_of_two(inputs: dict[str, Any]) -> dict[str, Any]:
    import torch

    if all(v.shape[0] >= 2 for v in inputs.values()):
        return inputs
    return {k: (torch.cat([v, v]) if v.shape[0] < 2 else v) for k, v in inputs.items()}


def export_torch_to_onnx(module: Any, inputs: dict[str, Any], path: str | Path, *, input_names: Sequence[str],
                         output_names: Sequence[str] | None = None, opset: int = 18,
                         exporter: Exporter = "dynamo", dynamic_batch: bool | Sequence[str] = True,
                         external_data: bool | None = False) -> OnnxExportResult:
    """Export ``module`` called positionally with ``inputs[n] for n in input_names`` to ``path``.

    ``dynamic_batch``: True = dim 0 of every input (and output) is dynamic, False = none,
    a list = only those inputs. ``external_data``: False = one file, True = weights in
    ``<stem>.data``, None = only when the model is too big for one protobuf. Examples of one
    row are doubled (the torch.export-based exporter needs ≥ 2 to keep a batch dim dynamic).
    Nothing is left at ``path`` on failure; raises OnnxExportFailed with the full message.
    """
    import logging

    import onnx
    import torch

    path = Path(path)
    names = list(input_names)
    outs = list(output_names) if output_names else None
    if dynamic_batch is True:
        dynamic = names
    elif dynamic_batch is False:
        dynamic = []
    else:
        dynamic = [n for n in names if n in set(dynamic_batch)]
    example = _batch_of_two(inputs) if dynamic else inputs
    args = tuple(example[n] for n in names)
    big = param_bytes(module) > EXTERNAL_DATA_LIMIT
    use_ext = big if external_data is None else external_data
    # The exporter logs optional-dependency notices (e.g. torchvision ops) at WARNING.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    # onnxscript's constant folder tries onnx's reference evaluator on each foldable node and logs
    # "Evaluation failed: cannot reshape array of size 1 into shape (1,128)" at WARNING when a node
    # (a position-id Reshape over the symbolic batch) cannot be folded; the node is simply kept and
    # the exported graph is correct (parity checks prove it). Users read it as *Slimline's* evaluation
    # failing, so it is kept out of the step log.
    logging.getLogger("onnxscript.optimizer._constant_folding").setLevel(logging.ERROR)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".torch-onnx-", dir=path.parent))
    tmp = tmp_dir / "model.onnx"
    try:
        try:
            if exporter == "legacy":
                axes = {n: {0: "batch"} for n in dynamic + ((outs or []) if dynamic else [])} or None
                torch.onnx.export(module, args, str(tmp), input_names=names, output_names=outs,
                                  opset_version=opset, dynamic_axes=axes, dynamo=False)
            else:
                batch = torch.export.Dim("batch")
                dyn = tuple({0: batch} if n in dynamic else None for n in names) if dynamic else None
                torch.onnx.export(module, args, str(tmp), input_names=names, output_names=outs,
                                  opset_version=opset, dynamic_shapes=dyn, dynamo=True, external_data=big,
                                  verbose=False)
        except Exception as exc:  # noqa: BLE001 - the exporter raises assorted types
            other = "legacy" if exporter == "dynamo" else "dynamo"
            raise OnnxExportFailed(f"torch.onnx export ({exporter} exporter, opset {opset}) failed: "
                                   f"{exporter_message(exc)}", subject=str(path),
                                   hint=f"try the {other} exporter or another opset; unsupported ops must be "
                                        "replaced") from exc
        model = onnx.load(str(tmp), load_external_data=True)
        save_onnx(model, path, use_ext)
    except BaseException:
        path.unlink(missing_ok=True)
        path.with_suffix(".data").unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return OnnxExportResult(path=path, exporter=exporter, opset=onnx_opset(path), external_data=use_ext,
                            dynamic_inputs=dynamic)
