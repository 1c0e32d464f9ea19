"""The guardrail: broken first attempts are retried safer or refused; old exports are repaired."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slimline.core.data import DataBundle, Dataset
from slimline.core.errors import StepFailed
from slimline.core.handle import ModelHandle
from slimline.core.plugin import CancelToken, StepContext
from slimline.plugins.quantize import QuantizeDynamic, QuantizeStatic

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx_handles import save_onnx  # noqa: E402


def _ctx(tmp: Path, data: DataBundle | None) -> StepContext:
    return StepContext(work_dir=tmp / "step", data=data, threads=1, cancel=CancelToken())


def _rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _weight_outlier_model(tmp: Path) -> ModelHandle:
    """MatMul whose weight has one output column 1000× larger; that column is sliced away.

    Per-tensor quantization spends the whole int8 range on the outlier column and
    rounds every other weight to zero; per-channel scales fix it.
    """
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((32, 17)) * 0.1).astype(np.float32)
    w[:, 0] *= 1000.0
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="proj"),
        helper.make_node("Slice", ["h", "starts", "ends", "axes"], ["y"], name="drop_outlier"),
    ]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array([1], np.int64), "starts"),
             numpy_helper.from_array(np.array([17], np.int64), "ends"),
             numpy_helper.from_array(np.array([1], np.int64), "axes")]
    graph = helper.make_graph(nodes, "outlier_w",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return save_onnx(model, tmp / "outlier_w.onnx", {"x": ["batch", 32]}, {"y": ["batch", 16]})


def _activation_outlier_model(tmp: Path) -> ModelHandle:
    """Two MatMuls; hidden channel 32 is ~1000× the others but ignored by the second layer.

    Dynamic quantization scales the hidden activations per tensor, so the outlier
    crushes the useful channels at the input of ``head``: per-channel weights do not
    help, only leaving ``head`` in float does.
    """
    rng = np.random.default_rng(1)
    w1 = (rng.standard_normal((32, 33)) * 0.2).astype(np.float32)
    w1[:, 32] = 50.0
    w2 = (rng.standard_normal((33, 10)) * 0.2).astype(np.float32)
    w2[32, :] = 0.0
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="body"),
             helper.make_node("Relu", ["h"], ["r"], name="act"),
             helper.make_node("MatMul", ["r", "W2"], ["logits"], name="head")]
    graph = helper.make_graph(nodes, "outlier_a",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
                              [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return save_onnx(model, tmp / "outlier_a.onnx", {"x": ["batch", 32]}, {"logits": ["batch", 10]})


def test_per_tensor_reduce_range_is_retried_per_channel(tmp_path: Path) -> None:
    handle = _weight_outlier_model(tmp_path)
    data = DataBundle(eval=Dataset("rows", "test", {"x": _rows(64, 32)}))
    # 16 near-equal regression outputs on random rows: argmax agreement is not the point here.
    params = QuantizeDynamic.Params(per_channel=False, reduce_range=True, min_top1_agreement=0.9)
    out = QuantizeDynamic().run(handle, params, _ctx(tmp_path, data))
    attempts = out.tables["attempts"]
    assert attempts[0]["mean_cosine"] < 0.99          # the requested settings really were broken
    assert out.metrics["attempts"] == 2 and "per-channel" in attempts[1]["change"]
    assert out.metrics["mean_cosine"] >= 0.99
    assert any("missed the budget" in w for w in out.warnings)
    assert "per-channel" in out.tables["quantization"][0]["scheme"]


def test_activation_outlier_excludes_worst_node(tmp_path: Path) -> None:
    handle = _activation_outlier_model(tmp_path)
    data = DataBundle(eval=Dataset("rows", "test", {"x": _rows(128, 32, seed=3)}))
    out = QuantizeDynamic().run(handle, QuantizeDynamic.Params(), _ctx(tmp_path, data))
    attempts = out.tables["attempts"]
    assert attempts[0]["mean_cosine"] < 0.99
    assert "head" in attempts[-1]["change"] and "body" not in attempts[-1]["change"]
    assert out.metrics["mean_cosine"] >= 0.99 and out.metrics["top1_agreement"] >= 0.98
    graph = onnx.load(out.model.path).graph
    ops = {n.name: n.op_type for n in graph.node}
    assert ops.get("head") == "MatMul"                          # left in float
    assert "MatMulInteger" in ops.values()                      # body still quantized


def test_guardrail_refuses_when_attempts_run_out(tmp_path: Path) -> None:
    handle = _activation_outlier_model(tmp_path)
    data = DataBundle(eval=Dataset("rows", "test", {"x": _rows(64, 32, seed=3)}))
    with pytest.raises(StepFailed) as err:
        QuantizeDynamic().run(handle, QuantizeDynamic.Params(max_attempts=1), _ctx(tmp_path, data))
    assert "below budget" in err.value.message and "mean cosine" in err.value.message
    assert "nodes_to_exclude" in err.value.hint
    assert not (tmp_path / "step" / "model.onnx").exists()


def test_user_exclusion_list_is_respected(tmp_path: Path) -> None:
    handle = _activation_outlier_model(tmp_path)
    data = DataBundle(eval=Dataset("rows", "test", {"x": _rows(64, 32, seed=3)}))
    out = QuantizeDynamic().run(handle, QuantizeDynamic.Params(nodes_to_exclude=("head",)), _ctx(tmp_path, data))
    assert out.metrics["attempts"] == 1 and out.metrics["mean_cosine"] >= 0.99


def _old_export(tmp: Path, conv: bool) -> ModelHandle:
    """Opset 9, IR 3: initializers also listed as graph inputs, as old exporters wrote them."""
    rng = np.random.default_rng(5)
    if conv:
        w = (rng.standard_normal((8, 1, 3, 3)) * 0.3).astype(np.float32)
        b = np.zeros(8, np.float32)
        fc = (rng.standard_normal((8 * 6 * 6, 10)) * 0.05).astype(np.float32)
        nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[0, 0, 0, 0]),
                 helper.make_node("Relu", ["c"], ["r"], name="relu"),
                 helper.make_node("Flatten", ["r"], ["f"], name="flat", axis=1),
                 helper.make_node("Gemm", ["f", "FC", "FCB"], ["logits"], name="fc")]
        inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B"), numpy_helper.from_array(fc, "FC"),
                 numpy_helper.from_array(np.zeros(10, np.float32), "FCB")]
        x_shape = [1, 1, 8, 8]
    else:
        w = (rng.standard_normal((32, 64)) * 0.2).astype(np.float32)
        w2 = (rng.standard_normal((64, 10)) * 0.2).astype(np.float32)
        nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm1"),
                 helper.make_node("Relu", ["h"], ["r"], name="relu"),
                 helper.make_node("MatMul", ["r", "W2"], ["logits"], name="mm2")]
        inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(w2, "W2")]
        x_shape = [1, 32]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)] + [
        helper.make_tensor_value_info(i.name, TensorProto.FLOAT, list(i.dims)) for i in inits]
    graph = helper.make_graph(nodes, "old", inputs,
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=3)
    return save_onnx(model, tmp / f"old_{'conv' if conv else 'mlp'}.onnx", {"x": x_shape}, {"logits": [1, 10]})


def test_old_opset_model_quantizes_dynamic(tmp_path: Path) -> None:
    handle = _old_export(tmp_path, conv=False)
    data = DataBundle(eval=Dataset("rows", "test", {"x": _rows(16, 32)}))
    out = QuantizeDynamic().run(handle, QuantizeDynamic.Params(), _ctx(tmp_path, data))
    notes = " ".join(out.notes)
    assert "removed 3" not in notes and "initializer(s) listed as graph inputs" in notes
    assert "upgraded opset 9" in notes
    m = onnx.load(out.model.path)
    assert any(o.version >= 13 for o in m.opset_import if o.domain in ("", "ai.onnx"))
    assert "MatMulInteger" in {n.op_type for n in m.graph.node}
    assert out.metrics["mean_cosine"] >= 0.99


def test_old_opset_conv_quantizes_static_per_channel(tmp_path: Path) -> None:
    handle = _old_export(tmp_path, conv=True)
    images = np.random.default_rng(7).random((40, 1, 8, 8)).astype(np.float32)
    data = DataBundle(eval=Dataset("imgs", "test", {"x": images[:20]}),
                      calibration=Dataset("cal", "test", {"x": images[20:]}))
    out = QuantizeStatic().run(handle, QuantizeStatic.Params(calibrate_method="Percentile"), _ctx(tmp_path, data))
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(out.model.path).graph.node}
    assert any("upgraded opset 9" in n for n in out.notes)
    assert any("per-channel" in r["scheme"] for r in out.tables["quantization"])
    assert out.metrics["mean_cosine"] >= 0.99


def test_single_layer_is_never_excluded_into_a_float_copy(tmp_path: Path) -> None:
    """With one quantizable node, excluding it would pass on an unquantized model: refuse instead."""
    handle = _weight_outlier_model(tmp_path)
    data = DataBundle(eval=Dataset("rows", "test", {"x": _rows(64, 32)}))
    params = QuantizeDynamic.Params(per_channel=False, reduce_range=True, min_cosine=0.999999)
    with pytest.raises(StepFailed) as err:
        QuantizeDynamic().run(handle, params, _ctx(tmp_path, data))
    assert "2 attempt(s)" in err.value.message


def test_static_activation_outlier_is_retried(tmp_path: Path) -> None:
    """Conv whose channel 0 is ~1000× the rest (then sliced away): per-tensor activation scales crush the
    useful channels, so the default static settings miss the budget and the step must recover or refuse."""
    rng = np.random.default_rng(11)
    w = (rng.standard_normal((9, 1, 3, 3)) * 0.3).astype(np.float32)
    w[0] *= 1000.0
    fc = (rng.standard_normal((8 * 6 * 6, 10)) * 0.05).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("Slice", ["c", "s", "e", "a"], ["cs"], name="drop0"),
             helper.make_node("Flatten", ["cs"], ["f"], name="flat", axis=1),
             helper.make_node("Gemm", ["f", "FC"], ["logits"], name="fc")]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(fc, "FC"),
             numpy_helper.from_array(np.array([1], np.int64), "s"),
             numpy_helper.from_array(np.array([9], np.int64), "e"),
             numpy_helper.from_array(np.array([1], np.int64), "a")]
    graph = helper.make_graph(nodes, "outlier_conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    handle = save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "oc.onnx",
                   {"x": ["batch", 1, 8, 8]}, {"logits": ["batch", 10]})
    images = np.random.default_rng(12).random((64, 1, 8, 8)).astype(np.float32)
    data = DataBundle(eval=Dataset("imgs", "test", {"x": images[:32]}),
                      calibration=Dataset("cal", "test", {"x": images[32:]}))
    out = QuantizeStatic().run(handle, QuantizeStatic.Params(), _ctx(tmp_path, data))
    attempts = out.tables["attempts"]
    assert attempts[0]["mean_cosine"] < 0.99 and len(attempts) >= 2
    # The per-channel error attribution blames the conv (its rounded output), not the Gemm after it.
    assert "conv" in attempts[-1]["change"] and "fc" not in attempts[-1]["change"]
    assert out.metrics["mean_cosine"] >= 0.99 and out.metrics["top1_agreement"] >= 0.98
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(out.model.path).graph.node}
