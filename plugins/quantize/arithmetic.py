"""Show the arithmetic: for the largest weights, the scale/zero point chosen and the error it causes.

Read straight from the quantized graph (``<w>_quantized``, ``<w>_scale``,
``<w>_zero_point`` initializers written by onnxruntime.quantization), so the table
describes what will actually run, not what we think the quantizer did.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import onnx

SCHEME_NOTE = (
    "Linear quantization: q = clamp(round(w / scale) + zero_point, qmin, qmax), w ≈ (q − zero_point) · scale. "
    "Asymmetric: scale = (max − min)/(qmax − qmin), zero_point = round(qmin − min/scale), so [min, max] maps exactly "
    "onto the integer range; symmetric: zero_point = 0, scale = max|w|/127 — cheaper integer matmuls (no zero-point "
    "cross terms) at the cost of range when the values are skewed. Per-channel gives each output channel its own scale."
)
_INT_TYPES = {2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32}


def _channel_axis(q_name: str, shape: tuple[int, ...], n_scales: int, graph: "onnx.GraphProto") -> int:
    """Axis the per-channel scales run along: a DequantizeLinear's ``axis`` if any, else by shape."""
    from onnx import helper

    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input and node.input[0] == q_name:
            for a in node.attribute:
                if a.name == "axis":
                    ax = int(helper.get_attribute_value(a))
                    return ax % len(shape)
            return 1 if len(shape) == 2 else 0
    matches = [i for i, d in enumerate(shape) if d == n_scales]
    if len(shape) == 2 and 1 in matches:
        return 1  # MatMul weights [K, N]: one scale per output column
    return matches[0] if matches else 0


def _row(tensor: str, w: np.ndarray, scheme: str, scale: np.ndarray, zp: np.ndarray, deq: np.ndarray) -> dict[str, Any]:
    err = deq.astype(np.float64) - w.astype(np.float64)
    if scale.size == 1:
        scale_txt = f"{float(scale.reshape(-1)[0]):.4g}"
    elif scale.size:
        scale_txt = f"{float(scale.min()):.4g} … {float(scale.max()):.4g} ({scale.size} channels)"
    else:
        scale_txt = "—"
    if zp.size == 0:
        zp_txt = "—"
    elif np.all(zp == zp.reshape(-1)[0]):
        zp_txt = str(int(zp.reshape(-1)[0]))
    else:
        zp_txt = f"{int(zp.min())} … {int(zp.max())}"
    return {
        "tensor": tensor, "scheme": scheme, "shape": list(w.shape), "scale": scale_txt, "zero_point": zp_txt,
        "w_min": float(w.min()) if w.size else 0.0, "w_max": float(w.max()) if w.size else 0.0,
        "rmse": float(np.sqrt(np.mean(err ** 2))) if err.size else 0.0,
        "max_abs_error": float(np.max(np.abs(err))) if err.size else 0.0,
    }


def int8_table(float_model: "onnx.ModelProto", q_model: "onnx.ModelProto", top: int = 8) -> list[dict[str, Any]]:
    """Rows for the ``top`` largest quantized weights: scheme, scale, zero point, RMSE, max |error|."""
    from onnx import numpy_helper

    f_inits = {i.name: i for i in float_model.graph.initializer}
    q_inits = {i.name: i for i in q_model.graph.initializer}
    found = []
    for name, init in q_inits.items():
        if not name.endswith("_quantized") or init.data_type not in _INT_TYPES or init.data_type == 6:
            continue
        base = name[: -len("_quantized")]
        if base not in f_inits or f"{base}_scale" not in q_inits:
            continue
        size = int(np.prod(init.dims)) if init.dims else 1
        found.append((size, base, name))
    found.sort(reverse=True)
    rows = []
    for _, base, q_name in found[:top]:
        w = numpy_helper.to_array(f_inits[base]).astype(np.float32)
        q = numpy_helper.to_array(q_inits[q_name]).astype(np.int64)
        scale = numpy_helper.to_array(q_inits[f"{base}_scale"]).astype(np.float64).reshape(-1)
        zp_init = q_inits.get(f"{base}_zero_point")
        zp = (numpy_helper.to_array(zp_init).astype(np.int64).reshape(-1) if zp_init is not None
              else np.zeros(scale.shape, np.int64))
        if q.shape != w.shape:
            continue
        if scale.size > 1:
            axis = _channel_axis(q_name, q.shape, scale.size, q_model.graph)
            if not 0 <= axis < q.ndim or q.shape[axis] != scale.size:
                continue  # scales over a grouping this table cannot map onto one axis (e.g. LSTM gates 2x128)
            bshape = [1] * q.ndim
            bshape[axis] = scale.size
            deq = (q - zp.reshape(bshape)) * scale.reshape(bshape)
            gran = f"per-channel (axis {axis})"
        else:
            deq = (q - zp[0]) * scale[0]
            gran = "per-tensor"
        qtype = _INT_TYPES[q_inits[q_name].data_type]
        signed = np.issubdtype(qtype, np.signedinteger)
        symmetric = np.all(zp == 0) if signed else np.all(np.isin(zp, (127, 128)))
        scheme = f"{np.dtype(qtype).name} {'symmetric' if symmetric else 'asymmetric'} {gran}"
        rows.append(_row(base, w, scheme, scale, zp, deq))
    return rows


def fp16_table(float_model: "onnx.ModelProto", h_model: "onnx.ModelProto", top: int = 8) -> list[dict[str, Any]]:
    """Rows for the largest weights cast to float16: the rounding error of the cast."""
    from onnx import TensorProto, numpy_helper

    h_inits = {i.name: i for i in h_model.graph.initializer}
    found = []
    for init in float_model.graph.initializer:
        h = h_inits.get(init.name)
        if init.data_type == TensorProto.FLOAT and h is not None and h.data_type == TensorProto.FLOAT16:
            found.append((int(np.prod(init.dims)) if init.dims else 1, init.name))
    found.sort(reverse=True)
    rows = []
    for _, name in found[:top]:
        w = numpy_helper.to_array(next(i for i in float_model.graph.initializer if i.name == name))
        h = numpy_helper.to_array(h_inits[name]).astype(np.float32)
        rows.append(_row(name, w, "float16 cast (round to nearest, 10-bit mantissa)", np.array([]), np.array([]), h))
    return rows


def summarise(rows: list[dict[str, Any]], limit: int = 3) -> list[str]:
    """A few note lines: per tensor, the scale/zero point chosen and the error it caused."""
    lines = []
    for r in rows[:limit]:
        rng = max(abs(r["w_min"]), abs(r["w_max"])) or 1.0
        lines.append(
            f"{r['tensor']} {r['shape']}: {r['scheme']}, scale {r['scale']}, zero point {r['zero_point']}; "
            f"weights in [{r['w_min']:.4g}, {r['w_max']:.4g}] → RMSE {r['rmse']:.3g}, max |error| "
            f"{r['max_abs_error']:.3g} ({100 * r['max_abs_error'] / rng:.2f}% of max|w|)")
    return lines
