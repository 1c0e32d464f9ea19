"""Models whose layers live inside If branches (spox/silero-style exports): dynamic INT8 quantizes them,
static INT8 refuses up front (onnxruntime's static quantizer skips subgraphs), FP16 yields a loadable model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slimline.core.data import DataBundle, Dataset
from slimline.core.handle import ModelHandle, TensorSpec
from slimline.core.plugin import CancelToken, StepContext
from slimline.plugins.quantize import ConvertFp16, QuantizeDynamic, QuantizeStatic
from slimline.plugins.quantize.fp16 import topo_sort
from slimline.plugins.quantize.prep import count_ops

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _branch(name: str, seed: int) -> "onnx.GraphProto":
    """A body that reads the outer input ``x`` and holds its weights in Constant nodes (as spox writes them)."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((32, 64)).astype(np.float32) * 0.2, f"{name}_w1")
    w2 = numpy_helper.from_array(rng.standard_normal((64, 16)).astype(np.float32) * 0.2, f"{name}_w2")
    nodes = [
        helper.make_node("Constant", [], [f"{name}_w1"], value=w1, name=f"{name}_c1"),
        helper.make_node("Constant", [], [f"{name}_w2"], value=w2, name=f"{name}_c2"),
        helper.make_node("MatMul", ["x", f"{name}_w1"], [f"{name}_h"], name=f"{name}_mm1"),
        helper.make_node("Relu", [f"{name}_h"], [f"{name}_r"], name=f"{name}_relu"),
        helper.make_node("MatMul", [f"{name}_r", f"{name}_w2"], [f"{name}_y"], name=f"{name}_mm2"),
    ]
    out = helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, ["batch", 16])
    return helper.make_graph(nodes, name, [], [out])


def _if_model(tmp: Path) -> ModelHandle:
    """Top level: Constant, Equal, If only — every weight is inside the branches (like silero-vad 5)."""
    one = numpy_helper.from_array(np.array(1, dtype=np.int64), "one")
    nodes = [
        helper.make_node("Constant", [], ["one"], value=one, name="c_one"),
        helper.make_node("Equal", ["one", "one"], ["cond"], name="eq"),
        helper.make_node("If", ["cond"], ["y"], name="If_0", then_branch=_branch("then", 0),
                         else_branch=_branch("else", 1)),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp / "if.onnx"
    onnx.save(model, str(path))
    return ModelHandle(path=str(path), format="onnx", family="onnx", files=[str(path)],
                       inputs=[TensorSpec(name="x", shape=["batch", 32])],
                       outputs=[TensorSpec(name="y", shape=["batch", 16])], bytes_on_disk=path.stat().st_size)


def _ctx(tmp: Path, data: DataBundle | None = None) -> StepContext:
    return StepContext(work_dir=tmp / "step", data=data, threads=1, cancel=CancelToken())


def _data() -> DataBundle:
    x = np.random.default_rng(3).standard_normal((32, 32)).astype(np.float32)
    return DataBundle(eval=Dataset("rows", "test", {"x": x}), calibration=Dataset("rows", "calibration", {"x": x}))


def test_count_ops_sees_inside_if_branches(tmp_path: Path) -> None:
    model = onnx.load(_if_model(tmp_path).path)
    assert count_ops(model, subgraphs=False) == {"Constant": 1, "Equal": 1, "If": 1}
    assert count_ops(model)["MatMul"] == 4


def test_dynamic_int8_quantizes_weights_inside_if_branches(tmp_path: Path) -> None:
    handle = _if_model(tmp_path)
    assert not [p for p in QuantizeDynamic().check(handle, QuantizeDynamic.Params()) if p.severity == "error"]
    out = QuantizeDynamic().run(handle, QuantizeDynamic.Params(min_top1_agreement=0.5), _ctx(tmp_path, _data()))
    q = onnx.load(out.model.path)
    ops = count_ops(q)
    # the pre-processing optimiser may inline the constant-condition If; either way no float MatMul is left
    assert ops.get("MatMulInteger", 0) + ops.get("DynamicQuantizeMatMul", 0) >= 2 and not ops.get("MatMul"), ops
    assert out.metrics["size_ratio"] < 0.6


def test_static_int8_refuses_subgraph_only_models_pointing_at_dynamic(tmp_path: Path) -> None:
    handle = _if_model(tmp_path)
    errors = [p for p in QuantizeStatic().check(handle, QuantizeStatic.Params()) if p.severity == "error"]
    assert errors, "static INT8 would quantize nothing here"
    assert "subgraph" in errors[0].message and "dynamic INT8" in (errors[0].fix or "")


def test_fp16_of_if_model_loads_and_matches(tmp_path: Path) -> None:
    import onnxruntime as ort

    handle = _if_model(tmp_path)
    out = ConvertFp16().run(handle, ConvertFp16.Params(), _ctx(tmp_path, _data()))
    x = np.random.default_rng(5).standard_normal((4, 32)).astype(np.float32)
    ref = ort.InferenceSession(handle.path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(out.model.path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.01


def test_topo_sort_orders_an_if_after_the_outer_node_its_branch_reads() -> None:
    body = helper.make_graph([helper.make_node("Relu", ["xc"], ["r"], name="relu")], "b", [],
                             [helper.make_tensor_value_info("r", TensorProto.FLOAT, [1])])
    late = helper.make_graph([helper.make_node("Identity", ["t"], ["r2"], name="late"),
                              helper.make_node("Neg", ["xc"], ["t"], name="early")], "b2", [],
                             [helper.make_tensor_value_info("r2", TensorProto.FLOAT, [1])])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], name="if", then_branch=body, else_branch=late),
         helper.make_node("Cast", ["x"], ["xc"], to=TensorProto.FLOAT, name="cast")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    topo_sort(graph)
    assert [n.name for n in graph.node] == ["cast", "if"]
    else_branch = next(a.g for a in graph.node[1].attribute if a.name == "else_branch")
    assert [n.name for n in else_branch.node] == ["early", "late"]
