"""Real values of quantized ONNX weights, so a before/after comparison compares like with like.

A quantized variant stores ``fc.weight`` as int8 ``fc.weight_quantized`` plus a scale and a zero
point; histogramming the int8 codes against the float original says nothing about what the
quantization did. The graph says how each stored integer tensor is read back:

* ``DequantizeLinear(x, scale, zero_point, axis=...)`` — per tensor, or per channel along ``axis``;
* ``QLinearConv`` / ``QLinearMatMul`` — the weight is input 3, its scale 4 and zero point 5
  (per output channel: axis 0 for a Conv kernel, the last axis for a MatMul ``B``);
* ``MatMulInteger(A, B, a_zp, b_zp)`` — ``B``'s zero point is input 3; its scale is not an input but
  a float constant multiplied in right after (``Cast`` → ``Mul``), found by walking the few nodes below.

Qt-free and cheap: only the graph structure is read (no weight data beyond the small scales).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from slimline.core.handle import ModelHandle
    from slimline.core.stats import Histogram

__all__ = ["QuantParams", "counterpart", "dequantize", "dequantized_array", "quant_params", "values_histogram"]

# how far below a MatMulInteger the scale multiplication may be (Cast, Mul, maybe a second Mul)
_SCALE_SEARCH_DEPTH = 3


@dataclass(frozen=True)
class QuantParams:
    """How one stored integer tensor is read back: ``(q - zero_point) * scale``, per channel along ``axis``."""

    scale: str
    zero_point: str | None = None
    axis: int | None = None


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None = None,
               axis: int | None = None) -> np.ndarray:
    """``(q - zero_point) * scale`` in float32; a 1-D scale of the channel count applies along ``axis``."""
    import numpy as np

    x = np.asarray(q).astype(np.float32)
    s = np.asarray(scale, dtype=np.float32)
    zp = np.zeros((), np.float32) if zero_point is None else np.asarray(zero_point).astype(np.float32)

    def along(v: np.ndarray) -> np.ndarray:
        if v.ndim == 0 or v.size == 1 or x.ndim == 0:
            return v.reshape(()) if v.size == 1 else v
        ax = (axis if axis is not None else 0) % x.ndim
        if v.ndim == 1 and v.shape[0] == x.shape[ax]:
            shape = [1] * x.ndim
            shape[ax] = -1
            return v.reshape(shape)
        return v  # blocked or already broadcastable shapes: let NumPy decide (or fail clearly)

    return (x - along(zp)) * along(s)


def _initializers(model: onnx.ModelProto) -> dict[str, Any]:
    from slimline.core.models.onnx_files import onnx_tensors

    return {t.name: t.tensor for t in onnx_tensors(model)}


def quant_params(model: onnx.ModelProto) -> dict[str, QuantParams]:
    """Stored integer weight name → how to read it back, from the graph's quantization nodes."""
    from slimline.core.models.onnx_files import iter_graphs

    inits = _initializers(model)
    nodes = [n for g in iter_graphs(model.graph) for n in g.node]
    consumers: dict[str, list[Any]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out: dict[str, QuantParams] = {}

    def opt(node: Any, i: int) -> str | None:
        return node.input[i] if len(node.input) > i and node.input[i] else None

    for n in nodes:
        op = n.op_type
        if op == "DequantizeLinear" and n.input and n.input[0] in inits and opt(n, 1):
            axis = next((int(a.i) for a in n.attribute if a.name == "axis"), 1)
            out[n.input[0]] = QuantParams(str(opt(n, 1)), opt(n, 2), axis)
        elif op in ("QLinearConv", "QLinearMatMul") and opt(n, 3) in inits and opt(n, 4):
            w = str(opt(n, 3))
            axis = 0 if op == "QLinearConv" else -1
            out.setdefault(w, QuantParams(str(opt(n, 4)), opt(n, 5), axis))
        elif op in ("MatMulInteger", "ConvInteger") and opt(n, 1) in inits:
            w = str(opt(n, 1))
            scale = _scale_below(n, consumers, inits, w)
            if scale is not None:
                out.setdefault(w, QuantParams(scale, opt(n, 3), 0 if op == "ConvInteger" else -1))
    return out


def _scale_below(node: Any, consumers: dict[str, list[Any]], inits: dict[str, Any], weight: str) -> str | None:
    """The weight's float scale: a constant multiplied into the integer product a few nodes below.

    onnxruntime names it ``<weight base>_scale``; prefer that name, else the first float constant
    met in a ``Mul`` on the way down.
    """
    import onnx

    base = weight[: -len("_quantized")] if weight.endswith("_quantized") else weight
    if f"{base}_scale" in inits:
        return f"{base}_scale"
    frontier, seen = list(node.output), set()
    for _ in range(_SCALE_SEARCH_DEPTH):
        nxt: list[str] = []
        for t in frontier:
            for c in consumers.get(t, []):
                if id(c) in seen:
                    continue
                seen.add(id(c))
                if c.op_type == "Mul":
                    for i in c.input:
                        if i in inits and inits[i].data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
                            return str(i)
                nxt.extend(c.output)
        frontier = nxt
    return None


def dequantized_array(handle: ModelHandle, name: str) -> np.ndarray | None:
    """The tensor's real values when the graph quantizes it; None when it is not a quantized weight."""
    if getattr(handle, "format", "") != "onnx":
        return None
    from slimline.core.models.onnx_files import cached_model
    from slimline.core.models.weights import weight_source

    params = quant_params(cached_model(handle.path)).get(name)
    if params is None:
        return None
    src = weight_source(handle)
    q = src.array(name)
    if q.dtype.kind not in "iu":
        return None  # already float (a fake-quant graph): its values are the real ones
    scale = src.array(params.scale)
    zp = src.array(params.zero_point) if params.zero_point else None
    return dequantize(q, scale, zp, params.axis)


def counterpart(names: list[str], name: str) -> str | None:
    """The variant tensor that holds the original's ``name``; None when pruning/renaming removed it.

    Exact name first, then ``<name>_quantized`` and other decorated names containing it (the biggest
    wins is left to the caller: here the first in model order).
    """
    if name in names:
        return name
    for suffix in ("_quantized", "_dequantized", "_q"):
        if name + suffix in names:
            return name + suffix
    cands = [n for n in names if name in n and not n.endswith(("_scale", "_zero_point"))]
    return cands[0] if cands else None


def values_histogram(arr: np.ndarray, *, bins: int = 64, sample: int | None = None) -> Histogram:
    """The same histogram ``core.stats.histogram`` draws, over an array already in memory."""
    import numpy as np

    from slimline.core.stats import Histogram, _bincount_hist, _chunks, _finite_range, _flat, _sample

    flat = _flat(arr)
    total = int(flat.size)
    sampled = sample is not None and 0 < sample < total
    data = _sample(flat, int(sample)) if sampled and sample is not None else flat
    lo, hi = _finite_range(_chunks(data))
    if not hi > lo:
        hi = lo + 1.0
    counts, n = _bincount_hist(_chunks(data), lo, hi, bins)
    return Histogram(edges=np.linspace(lo, hi, bins + 1), counts=counts, sampled=sampled, n=n, total=total)
