"""Model diff: what changed between two variants, layer by layer (the window's Compare tab).

Per weight tensor of the first model: its counterpart in the second (same name, or the name a quantizer
or a low-rank step gave it), the relative weight error ‖B − A‖/‖A‖ in real values (int8 tensors read
back through their scale and zero point; a factorized layer as the product of its two factors), and with
data the relative error of that layer's output on the same rows. Rows are sorted by the largest error.
A layer the second model lacks (pruned away, renamed) or whose shape changed (channel pruning) says so
instead of a number. Runs as a job (``diff_task``): reading two big models and running them on data is
seconds of work the window must not wait for.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from slimline.core.handle import ModelHandle

DIFF_TASK = "slimline.core.diff:diff_task"
OUTPUT_ROWS = 32
Status = Literal["changed", "same", "missing", "reshaped", "factorized"]


class LayerDiff(BaseModel):
    tensor: str                      # name in model A
    other: str = ""                  # its counterpart in model B
    op: str = ""
    shape: list[int] = Field(default_factory=list)
    other_shape: list[int] = Field(default_factory=list)
    params: int = 0
    weight_error: float | None = None    # ‖B − A‖ / ‖A‖ in real values
    output_error: float | None = None    # relative L2 of the layer's output on the data
    status: Status = "changed"
    note: str = ""

    @property
    def sort_value(self) -> float:
        vals = [v for v in (self.output_error, self.weight_error) if v is not None and math.isfinite(v)]
        return max(vals) if vals else (math.inf if self.status in ("missing", "reshaped") else 0.0)


class ModelDiff(BaseModel):
    a: str
    b: str
    rows: list[LayerDiff] = Field(default_factory=list)
    dataset: str = ""                # rows the output errors were measured on ("" = weights only)
    n: int = 0
    notes: list[str] = Field(default_factory=list)
    seconds: float = 0.0


def model_diff(a: ModelHandle, b: ModelHandle, dataset: Any = None, *,
               progress: Callable[[float, str], None] | None = None, cancel: Any = None) -> ModelDiff:
    """Per-layer weight error (and with ``dataset`` output error) of ``b`` against ``a``."""
    from slimline.core.dequant import counterpart
    from slimline.core.stats import layer_inventory

    t0 = time.perf_counter()
    say = progress or (lambda f, m: None)
    say(0.0, "listing tensors")
    rows_a = [r for r in layer_inventory(a) if r.kind == "weight" and len(r.shape) >= 2]
    names_b = [r.name for r in layer_inventory(b)]
    shapes_b = {r.name: r.shape for r in layer_inventory(b)}
    out: list[LayerDiff] = []
    notes: list[str] = []
    if a.format != b.format:
        notes.append(f"{a.format} vs {b.format}: an exporter may fold layers (BatchNorm into Conv), so some "
                     "differences come from the conversion, not from compression")
    for i, r in enumerate(rows_a):
        if cancel is not None:
            cancel.raise_if_cancelled()
        say(0.6 * i / max(len(rows_a), 1), f"weights: {r.name}")
        out.append(_weight_row(a, b, r, counterpart(names_b, r.name), names_b, shapes_b))
    n, name = 0, ""
    if dataset is not None and a.capabilities.run and b.capabilities.run:
        say(0.65, "layer outputs on the data")
        rows = dataset.take(OUTPUT_ROWS)
        n, name = len(rows), str(getattr(rows, "name", ""))
        outs_a = layer_outputs(a, rows, [d.tensor for d in out])
        if cancel is not None:
            cancel.raise_if_cancelled()
        def key_b(d: LayerDiff) -> str:   # a factorized layer's output is its second factor's
            return d.other.split(" × ")[-1]

        outs_b = layer_outputs(b, rows, [key_b(d) for d in out if d.other])
        for d in out:
            x, y = outs_a.get(d.tensor), outs_b.get(key_b(d))
            if x is not None and y is not None and x.shape == y.shape:
                from slimline.core.fidelity import rel_l2_error

                d.output_error = rel_l2_error(x, y, floor=0.0)
    out.sort(key=lambda d: -d.sort_value)
    say(1.0, "done")
    return ModelDiff(a=a.path, b=b.path, rows=out, dataset=name, n=n, notes=notes, seconds=time.perf_counter() - t0)


def _array(handle: ModelHandle, name: str) -> np.ndarray:
    """Real values of a tensor: dequantized when the graph stores it as integers."""
    from slimline.core.dequant import dequantized_array
    from slimline.core.models.weights import weight_source

    arr = dequantized_array(handle, name)
    if arr is None:
        arr = weight_source(handle).array(name)
    return np.asarray(arr, dtype=np.float64)


def _factors(names: list[str], tensor: str) -> tuple[str, str, str] | None:
    """(first, second, layout) of a factorized layer: ONNX "<w>_lr_a/_lr_b", torch "<m>.0/1.weight"."""
    if f"{tensor}_lr_a" in names and f"{tensor}_lr_b" in names:
        return f"{tensor}_lr_a", f"{tensor}_lr_b", "onnx"
    if tensor.endswith(".weight"):
        base = tensor[: -len(".weight")]
        if f"{base}.0.weight" in names and f"{base}.1.weight" in names:
            return f"{base}.0.weight", f"{base}.1.weight", "torch"
    return None


def _weight_row(a: ModelHandle, b: ModelHandle, r: Any, other: str | None, names_b: list[str],
                shapes_b: dict[str, list[int]]) -> LayerDiff:
    from slimline.core.fidelity import rel_l2_error

    row = LayerDiff(tensor=r.name, op=r.op_type, shape=list(r.shape), params=r.params)
    fac = _factors(names_b, r.name) if r.name not in names_b else None
    try:
        wa = _array(a, r.name)
        if fac is not None:
            f1, f2 = _array(b, fac[0]), _array(b, fac[1])
            if fac[2] == "onnx":   # MatMul(X, A[in, r]) then B[r, out]: the product is the [in, out] weight
                wb = f1 @ f2
                wb = wb.T if wb.shape != wa.shape and wb.T.shape == wa.shape else wb
            else:                  # torch Sequential(first [r, in…], second [out, r…])
                wb = f2.reshape(f2.shape[0], -1) @ f1.reshape(f1.shape[0], -1)
            row.other, row.status, row.other_shape = f"{fac[0]} × {fac[1]}", "factorized", list(wb.shape)
            if wb.size == wa.size:
                row.weight_error = rel_l2_error(wa.reshape(-1), wb.reshape(-1), floor=0.0)
            row.note = f"factorized: rank {min(shapes_b.get(fac[0], [0]))}"
            return row
        if other is None:
            row.status, row.note = "missing", "no tensor for this layer in B (removed or renamed)"
            return row
        row.other, row.other_shape = other, list(shapes_b.get(other, []))
        wb = _array(b, other)
        if wb.shape != wa.shape:
            if wb.size == wa.size:
                wb = wb.reshape(wa.shape)
            else:
                row.status = "reshaped"
                row.note = f"shape {list(wa.shape)} → {list(wb.shape)} (channels removed)"
                return row
        err = rel_l2_error(wa, wb, floor=0.0)
        row.weight_error, row.status = err, "same" if err == 0.0 else "changed"
    except Exception as exc:  # noqa: BLE001 - one unreadable tensor must not hide the others
        row.note = f"not compared: {type(exc).__name__}: {str(exc)[:120]}"
    return row


def layer_outputs(handle: ModelHandle, dataset: Any, tensors: list[str]) -> dict[str, np.ndarray]:
    """The output of the layer holding each weight tensor, on ``dataset``'s rows (ONNX or torch)."""
    try:
        if handle.format == "onnx":
            return _onnx_outputs(handle, dataset, tensors)
        if handle.family == "torch":
            return _torch_outputs(handle, dataset, tensors)
    except Exception:  # noqa: BLE001 - output errors are extra: the weight errors still stand
        return {}
    return {}


def _onnx_outputs(handle: ModelHandle, dataset: Any, tensors: list[str]) -> dict[str, np.ndarray]:
    import onnx

    from slimline.core.models import load_onnx
    from slimline.core.runtime import ort_inference_session

    model = load_onnx(handle.path)
    dq = {n.input[0]: n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input}
    want: dict[str, str] = {}
    for t in tensors:
        names: set[str] = {t, dq.get(t, "")} - {""}
        for node in model.graph.node:
            if node.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose", "MatMulInteger", "ConvInteger",
                                "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulNBits") \
                    and names & set(node.input):
                want[t] = _real_output(model, node)
                break
    if not want:
        return {}
    existing = {o.name for o in model.graph.output}
    for out in set(want.values()) - existing:
        model.graph.output.append(onnx.ValueInfoProto(name=out))
    sess = ort_inference_session(model.SerializeToString(), threads=0, optimize=False,
                                 external_data_dir=Path(handle.path).parent)
    out_names = [o.name for o in sess.get_outputs()]
    inputs = {i.name for i in sess.get_inputs()}
    feeds = {k: v for k, v in dataset.inputs.items() if k in inputs}
    if len(feeds) != len(inputs) and len(inputs) == 1 and len(dataset.inputs) == 1:
        feeds = {next(iter(inputs)): next(iter(dataset.inputs.values()))}
    from slimline.core.runtime import ort_numpy_dtype

    feeds = {i.name: np.asarray(feeds[i.name]).astype(ort_numpy_dtype(i.type) or np.float32)
             for i in sess.get_inputs() if i.name in feeds}
    got = dict(zip(out_names, sess.run(None, feeds)))
    return {t: np.asarray(got[o]) for t, o in want.items() if o in got}


INTEGER_OUT = ("MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul")


def _real_output(model: Any, node: Any) -> str:
    """The tensor holding the node's result in real values: integer kernels are followed through the
    Cast / Mul (scale) / DequantizeLinear nodes below them."""
    out = node.output[0]
    if node.op_type not in INTEGER_OUT:
        return str(out)
    for _ in range(3):
        users = [n for n in model.graph.node if out in n.input]
        if len(users) != 1 or users[0].op_type not in ("Cast", "Mul", "DequantizeLinear"):
            break
        out = users[0].output[0]
    return str(out)


def _torch_outputs(handle: ModelHandle, dataset: Any, tensors: list[str]) -> dict[str, np.ndarray]:
    import torch

    from slimline.core.models import load_torch_runnable
    from slimline.core.runtime import _to_numpy_list

    module = load_torch_runnable(handle)
    mods = dict(module.named_modules())
    got: dict[str, np.ndarray] = {}
    hooks = []
    for t in tensors:
        base = t[: -len(".weight")] if t.endswith(".weight") else t
        mod = mods.get(base)
        if mod is not None:
            hooks.append(mod.register_forward_hook(
                lambda _m, _i, o, t=t: got.__setitem__(t, o.detach().float().cpu().numpy())))
    names = [s.name for s in handle.inputs]
    try:
        with torch.inference_mode():
            feeds = [torch.from_numpy(np.ascontiguousarray(dataset.inputs[n])) for n in names if n in dataset.inputs]
            out = module(*feeds)
            _to_numpy_list(out, [])
    finally:
        for h in hooks:
            h.remove()
    return got


def diff_task(spec: dict[str, Any], emit: Callable[[dict[str, Any]], None], cancel: Any) -> dict[str, Any]:
    """Job body (slimline.core.jobs.start_task_job): ``a``/``b`` handle dicts, optional ``data_path``."""
    from slimline.core.results import ProgressEvent

    a, b = ModelHandle.model_validate(spec["a"]), ModelHandle.model_validate(spec["b"])
    dataset = None
    if spec.get("data_path"):
        from slimline.core.data import load_dataset

        try:
            dataset = load_dataset(spec["data_path"], a)
        except Exception:  # noqa: BLE001 - the weights can still be compared
            dataset = None

    def progress(f: float, m: str) -> None:
        emit(ProgressEvent(overall=f, step_id="diff", fraction=f, message=m).to_dict())

    result = model_diff(a, b, dataset, progress=progress, cancel=cancel)
    return result.model_dump(mode="json")


def start_diff(a: ModelHandle, b: ModelHandle, data_path: str | None = None) -> Any:
    from slimline.core.jobs import start_task_job

    return start_task_job(DIFF_TASK, {"a": a.model_dump(mode="json"), "b": b.model_dump(mode="json"),
                                      "data_path": data_path})


__all__ = ["DIFF_TASK", "LayerDiff", "ModelDiff", "diff_task", "layer_outputs", "model_diff", "start_diff"]
