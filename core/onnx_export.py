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

import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
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


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# torch.onnx's generic advice around the real reason ("Next steps: modify the model code …"): noise here
_BOILERPLATE = ("Next steps:", "- Modify the model code", "- Debug `torch.export", "- Create an issue",
                "(Refer to the full stack trace", "## Exception summary")
_STEP = re.compile(r"\s*(This is step \d+/\d+ of exporting the model to ONNX\.?|Next steps:\s*$)")


def _clean(text: str) -> list[str]:
    """Lines of an exporter message without colour codes, boilerplate advice or blank runs."""
    lines = []
    for raw in _ANSI.sub("", text).splitlines():
        line = _STEP.sub("", raw).rstrip()
        if line.strip() and not line.lstrip().startswith(_BOILERPLATE):
            lines.append(line)
    return lines


def exporter_message(exc: BaseException) -> str:
    """The exporter's message with the innermost reason on its first line, then every distinct cause.

    torch.onnx's first line ("Failed to export the model with torch.export") names the stage,
    not the reason; the reason is the root of the exception chain. Whoever shows only one line
    (a status bar, a table cell) still shows why.
    """
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and all(cur is not c for c in chain):
        chain.append(cur)
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    texts = [_clean(str(e)) or [type(e).__name__] for e in chain]
    head, rest = texts[0][0], texts[0][1:]
    root = chain[-1]
    if root is not exc:
        reason = texts[-1][0]
        head = f"{head.rstrip(' .:')}: {type(root).__name__}: {reason}"
        rest = [ln for ln in rest if reason not in ln]  # the summary repeats the root's words
    lines = [head, *rest]
    for e, text in zip(chain[1:], texts[1:]):
        body = text[1:] if e is root else text
        if e is not root:
            body = [f"caused by {type(e).__name__}: {body[0]}", *body[1:]]
        lines += [ln for ln in body if not any(ln in seen for seen in lines)]
    return "\n".join(lines)


def _batch_of_two(inputs: dict[str, Any]) -> dict[str, Any]:
    import torch

    if all(v.shape[0] >= 2 for v in inputs.values()):
        return inputs
    return {k: (torch.cat([v, v]) if v.shape[0] < 2 else v) for k, v in inputs.items()}


def export_torch_to_onnx(module: Any, inputs: dict[str, Any], path: str | Path, *, input_names: Sequence[str],
                         output_names: Sequence[str] | None = None, opset: int = 18,
                         exporter: Exporter = "dynamo", dynamic_batch: bool | Sequence[str] = True,
                         dynamic_dims: Mapping[str, Mapping[int, str]] | None = None,
                         external_data: bool | None = False) -> OnnxExportResult:
    """Export ``module`` called positionally with ``inputs[n] for n in input_names`` to ``path``.

    ``dynamic_batch``: True = dim 0 of every input (and output) is dynamic, False = none,
    a list = only those inputs. ``dynamic_dims``: more dynamic dims by input and axis, named
    (``{"input_ids": {1: "sequence"}}``; one name = one shared dim). ``external_data``: False =
    one file, True = weights in ``<stem>.data``, None = only when the model is too big for one
    protobuf. Examples of one row are doubled (the torch.export-based exporter needs ≥ 2 to keep a batch dim dynamic).
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
    extra = {n: {int(a): str(d) for a, d in axes.items()} for n, axes in (dynamic_dims or {}).items() if n in names}
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
                axes = {n: {0: "batch"} for n in dynamic + ((outs or []) if dynamic else [])}
                for n, more in extra.items():
                    axes[n] = {**axes.get(n, {}), **more}
                torch.onnx.export(module, args, str(tmp), input_names=names, output_names=outs,
                                  opset_version=opset, dynamic_axes=axes or None, dynamo=False)
            else:
                dims = {"batch": torch.export.Dim("batch")}
                per_input = [{**({0: "batch"} if n in dynamic else {}), **extra.get(n, {})} for n in names]
                dyn = tuple({a: dims.setdefault(d, torch.export.Dim(d)) for a, d in ax.items()} or None
                            for ax in per_input) if any(per_input) else None
                with warnings.catch_warnings():  # dim renaming and pytree deprecation notices: not the user's
                    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx.*")
                    warnings.filterwarnings("ignore", category=FutureWarning)
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
