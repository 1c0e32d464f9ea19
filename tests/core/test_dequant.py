"""Quantized ONNX weights read back as real values for the before/after overlay."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimline.core.dequant import counterpart, dequantize, dequantized_array, quant_params, values_histogram
from slimline.core.models import open_model


def _save(tmp_path: Path, nodes: list, inits: list, name: str = "q.onnx") -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    p = tmp_path / name
    onnx.save(m, p)
    return p


def test_dequantize_per_tensor_and_per_channel() -> None:
    q = np.array([[0, 10], [20, 30]], np.int8)
    np.testing.assert_allclose(dequantize(q, np.float32(0.5), np.int8(10)), [[-5, 0], [5, 10]])
    got = dequantize(q, np.array([1.0, 2.0], np.float32), np.array([0, 10], np.int8), axis=0)
    np.testing.assert_allclose(got, [[0, 10], [20, 40]])
    got = dequantize(q, np.array([1.0, 2.0], np.float32), None, axis=1)
    np.testing.assert_allclose(got, [[0, 20], [20, 60]])


def test_dequantize_linear_per_channel_from_the_graph(tmp_path: Path) -> None:
    w = np.array([[1, -2, 3, 4], [5, 6, -7, 8]], np.int8).T.copy()  # [4, 2]
    scale = np.array([0.1, 0.2], np.float32)
    zp = np.array([1, -1], np.int8)
    nodes = [helper.make_node("DequantizeLinear", ["fc.weight_quantized", "fc.weight_scale", "fc.weight_zp"],
                              ["w"], axis=1),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    inits = [numpy_helper.from_array(w, "fc.weight_quantized"), numpy_helper.from_array(scale, "fc.weight_scale"),
             numpy_helper.from_array(zp, "fc.weight_zp")]
    p = _save(tmp_path, nodes, inits)
    params = quant_params(onnx.load(p))["fc.weight_quantized"]
    assert (params.scale, params.zero_point, params.axis) == ("fc.weight_scale", "fc.weight_zp", 1)
    got = dequantized_array(open_model(p), "fc.weight_quantized")
    assert got is not None and got.dtype == np.float32
    np.testing.assert_allclose(got, (w.astype(np.float32) - zp) * scale, rtol=1e-6)
    assert dequantized_array(open_model(p), "fc.weight_scale") is None  # not a quantized weight


def test_matmul_integer_scale_found_below(tmp_path: Path) -> None:
    w = np.array([[10, 20], [30, 40], [50, 60], [70, 80]], np.uint8)
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("MatMulInteger", ["xq", "B", "xz", "B_zp"], ["mm"]),
             helper.make_node("Cast", ["mm"], ["mmf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["mmf", "sB"], ["s"]),
             helper.make_node("Mul", ["s", "xs"], ["y"])]
    inits = [numpy_helper.from_array(w, "B"), numpy_helper.from_array(np.uint8(40), "B_zp"),
             numpy_helper.from_array(np.float32(0.25), "sB")]
    p = _save(tmp_path, nodes, inits)
    # no onnxruntime naming: the float constant multiplied in below the product is the scale
    assert quant_params(onnx.load(p))["B"].scale == "sB"
    np.testing.assert_allclose(dequantized_array(open_model(p), "B"), (w.astype(np.float32) - 40) * 0.25)


def test_matmul_integer_onnxruntime_names(tmp_path: Path) -> None:
    w = np.array([[1, 2], [3, 4], [5, 6], [7, 8]], np.int8)
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("MatMulInteger", ["xq", "fc.weight_quantized", "xz", "fc.weight_zero_point"], ["mm"]),
             helper.make_node("Cast", ["mm"], ["mmf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["xs", "fc.weight_scale"], ["s"]),
             helper.make_node("Mul", ["mmf", "s"], ["y"])]
    inits = [numpy_helper.from_array(w, "fc.weight_quantized"),
             numpy_helper.from_array(np.int8(2), "fc.weight_zero_point"),
             numpy_helper.from_array(np.float32(0.5), "fc.weight_scale")]
    p = _save(tmp_path, nodes, inits)
    got = dequantized_array(open_model(p), "fc.weight_quantized")
    np.testing.assert_allclose(got, (w.astype(np.float32) - 2) * 0.5)


def test_qlinear_matmul_per_column(tmp_path: Path) -> None:
    w = np.array([[1, 2], [3, 4]], np.int8)
    names = ["xq", "xs", "xz", "W", "Ws", "Wz", "ys", "yz"]
    nodes = [helper.make_node("QLinearMatMul", names, ["y"])]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array([1.0, 10.0], np.float32), "Ws"),
             numpy_helper.from_array(np.zeros(2, np.int8), "Wz")]
    model = onnx.load_from_string(onnx.helper.make_model(
        helper.make_graph(nodes, "g", [], [], initializer=inits)).SerializeToString())
    params = quant_params(model)["W"]
    assert params.axis == -1
    np.testing.assert_allclose(dequantize(w, np.array([1.0, 10.0]), None, params.axis), [[1, 20], [3, 40]])


def test_counterpart_and_missing() -> None:
    names = ["fc.weight_quantized", "fc.weight_scale", "fc.weight_zero_point", "conv.weight"]
    assert counterpart(names, "conv.weight") == "conv.weight"
    assert counterpart(names, "fc.weight") == "fc.weight_quantized"
    assert counterpart(names, "pruned.weight") is None


def test_values_histogram_counts_everything() -> None:
    h = values_histogram(np.arange(100, dtype=np.float32), bins=10)
    assert int(h.counts.sum()) == 100 and h.total == 100
    assert len(h.edges) == 11 and h.edges[0] == pytest.approx(0.0) and h.edges[-1] == pytest.approx(99.0)
