"""Early, precise refusals on tiny helper-built models: static INT8 of an LSTM net (its weights sit in an op
the static quantizer skips) and any preset on an already-int8 model (no opset-upgrade error in its place)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slimline.core.errors import StepFailed
from slimline.core.handle import ModelHandle
from slimline.core.plugin import CancelToken, StepContext
from slimline.plugins.quantize import ConvertFp16, QuantizeDynamic, QuantizeStatic

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx_handles import save_onnx  # noqa: E402


def _lstm_model(tmp: Path) -> ModelHandle:
    """tf2onnx-style: an LSTM holds nearly every weight, a 16→1 MatMul head holds the rest."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.1, n)
             for n, s in (("W", (1, 64, 8)), ("R", (1, 64, 16)), ("B", (1, 128)), ("head", (16, 1)))]
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B"], ["", "h"], hidden_size=16, name="lstm"),
             helper.make_node("Squeeze", ["h", "axes"], ["hs"], name="sq"),
             helper.make_node("MatMul", ["hs", "head"], ["y"], name="head_mm")]
    inits.append(numpy_helper.from_array(np.array([0], dtype=np.int64), "axes"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [10, "batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return save_onnx(model, tmp / "lstm.onnx", {"x": [10, "batch", 8]}, {"y": ["batch", 1]})


def _int8_model(tmp: Path) -> ModelHandle:
    """What onnxruntime's dynamic quantizer writes for one Conv: DynamicQuantizeLinear → ConvInteger → rescale."""
    w = numpy_helper.from_array(np.ones((4, 1, 3, 3), dtype=np.int8), "w_q")
    wz = numpy_helper.from_array(np.array(0, dtype=np.int8), "w_zp")
    ws = numpy_helper.from_array(np.array(0.02, dtype=np.float32), "w_scale")
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dql"),
             helper.make_node("ConvInteger", ["xq", "w_q", "xz", "w_zp"], ["acc"], name="conv"),
             helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Mul", ["xs", "w_scale"], ["s"], name="scale"),
             helper.make_node("Mul", ["accf", "s"], ["y"], name="rescale")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], [w, wz, ws])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    return save_onnx(model, tmp / "int8.onnx", {"x": [1, 1, 8, 8]}, {"y": [1, 4, 6, 6]})


def _errors(problems: list) -> list:
    return [p for p in problems if p.severity == "error"]


def test_static_int8_of_an_lstm_net_refuses_naming_lstm_and_dynamic(tmp_path: Path) -> None:
    handle = _lstm_model(tmp_path)
    errors = _errors(QuantizeStatic().check(handle, QuantizeStatic.Params()))
    assert errors, "static INT8 would leave the LSTM weights in float"
    assert "LSTM" in errors[0].message and "static quantizer does not quantize" in errors[0].message
    assert "dynamic INT8" in (errors[0].fix or "")
    assert not _errors(QuantizeDynamic().check(handle, QuantizeDynamic.Params()))


@pytest.mark.parametrize("plugin", [QuantizeDynamic, QuantizeStatic, ConvertFp16])
def test_already_int8_model_is_refused_as_already_quantized(plugin, tmp_path: Path) -> None:
    handle = _int8_model(tmp_path)
    errors = _errors(plugin().check(handle, plugin.Params()))
    assert errors and "already quantized (2 int8 tensors" in errors[0].message, errors
    assert "ConvInteger" in errors[0].message
    ctx = StepContext(work_dir=tmp_path / "step", data=None, threads=1, cancel=CancelToken())
    with pytest.raises(StepFailed, match="already quantized"):
        plugin().run(handle, plugin.Params(), ctx)
