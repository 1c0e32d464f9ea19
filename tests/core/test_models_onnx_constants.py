"""Weights stored the way other exporters store them: Constant nodes (paddle2onnx), Constant nodes inside If
branches (silero-vad), ±inf scalar Clip bounds and int64 shape constants (torch/tf2onnx). Each is counted,
listed with its location, gets statistics and histograms, renders in `slimline inspect`, and folds into
initializers that onnx.checker, onnxruntime and onnxruntime's quantizer accept.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from slimline.core.models import fold_constants_to_initializers, open_model
from slimline.core.models.onnx_fold import count_constant_nodes
from slimline.core.render import print_inspect
from slimline.core.stats import compute_stats, constant_inventory, histogram, layer_inventory

RNG = np.random.default_rng(7)
W = RNG.standard_normal((4, 3)).astype(np.float32)
B = RNG.standard_normal(3).astype(np.float32)
W_THEN = RNG.standard_normal((4, 2)).astype(np.float32)
W_ELSE = RNG.standard_normal((4, 2)).astype(np.float32)
W_INNER = RNG.standard_normal((2, 2)).astype(np.float32)


def _const(name: str, arr: np.ndarray, node_name: str | None = None):
    from onnx import helper, numpy_helper

    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name), name=node_name or name)


def constant_model(path: Path) -> Path:
    """paddle2onnx/torch style: MatMul + Add weights as Constant nodes, ±inf Clip bounds, an int64 Reshape shape,
    a value_float scalar and a value_ints shape."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        _const("W", W, "const_W"), _const("b", B, "const_b"),
        _const("lo", np.array(-np.inf, np.float32)), _const("hi", np.array(np.inf, np.float32)),
        _const("shape", np.array([3, 2], np.int64)),
        helper.make_node("Constant", [], ["two"], value_float=2.0, name="const_two"),
        helper.make_node("Constant", [], ["flat"], value_ints=[-1], name="const_flat"),
        helper.make_node("MatMul", ["x", "W"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "b"], ["fc_out"], name="fc_bias"),
        helper.make_node("Clip", ["fc_out", "lo", "hi"], ["clipped"], name="clip"),
        helper.make_node("Mul", ["clipped", "two"], ["scaled"], name="scale"),
        helper.make_node("Reshape", ["scaled", "shape"], ["y"], name="reshape"),
        helper.make_node("Reshape", ["scaled", "flat"], ["z"], name="flatten"),
    ]
    graph = helper.make_graph(nodes, "constants", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [6])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="paddle2onnx-like")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def if_model(path: Path) -> Path:
    """silero-vad style: an If whose branches keep their weights in Constant nodes; the then-branch nests
    another If (recursion) and reads an outer-scope Constant weight."""
    import onnx
    from onnx import TensorProto, helper

    def out(name: str):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)

    inner_then = helper.make_graph([_const("w_inner", W_INNER, "const_inner"),
                                    helper.make_node("MatMul", ["t_mm", "w_inner"], ["it_out"], name="inner_mm")],
                                   "inner_then", [], [out("it_out")])
    inner_else = helper.make_graph([helper.make_node("Identity", ["t_mm"], ["ie_out"], name="inner_id")],
                                   "inner_else", [], [out("ie_out")])
    then_g = helper.make_graph([_const("w_then", W_THEN, "const_then"),
                                helper.make_node("MatMul", ["x", "w_then"], ["t_mm"], name="then_mm"),
                                helper.make_node("If", ["cond"], ["t_out"], then_branch=inner_then,
                                                 else_branch=inner_else, name="inner_if")],
                               "then", [], [out("t_out")])
    else_g = helper.make_graph([_const("w_else", W_ELSE, "const_else"),
                                helper.make_node("MatMul", ["x", "w_else"], ["e_out"], name="else_mm")],
                               "else", [], [out("e_out")])
    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g, name="branch")]
    graph = helper.make_graph(nodes, "ifgraph", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                                                 helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="spox-like")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx_constants")
    return {"const": constant_model(d / "const.onnx"), "if": if_model(d / "if.onnx")}


def _run(path_or_bytes: Path | bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    src = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


# --------------------------------------------------------------------------- counting and listing

def test_constant_node_weights_are_counted_and_listed(models):
    h = open_model(models["const"])
    assert h.param_count == W.size + B.size  # not the -inf/+inf/2.0 scalars, not the int64 shapes
    assert h.meta["weights_by_place"] == {"initializers": 0, "constant_nodes": 15, "subgraphs": 0}
    assert h.meta["tensors"] == 2 and h.meta["other_tensors"] == 5
    rows = {r.name: r for r in layer_inventory(h)}
    assert set(rows) == {"W", "b"}
    assert (rows["W"].op_type, rows["W"].layer, rows["W"].location) == ("MatMul", "fc", "Constant node const_W")
    assert (rows["b"].op_type, rows["b"].shape, rows["b"].params) == ("Add", [3], 3)
    assert sum(r.params for r in rows.values()) == h.param_count


def test_scalars_and_shape_tensors_are_kept_apart(models):
    h = open_model(models["const"])
    other = {r.name: (r.kind, r.dtype, r.value) for r in constant_inventory(h)}
    assert other == {"lo": ("scalar", "float32", "-inf"), "hi": ("scalar", "float32", "inf"),
                     "two": ("scalar", "float32", "2"), "shape": ("index", "int64", None),
                     "flat": ("index", "int64", "-1")}
    every = layer_inventory(h, include_constants=True)
    assert {r.name for r in every} == {"W", "b", *other}
    # statistics of a -inf scalar asked for by name do not crash: no finite value, one inf
    (lo,) = compute_stats(h, ["lo"])
    assert lo.min is None and lo.std is None and lo.inf_count == 1
    hist = histogram(h, "lo")
    assert hist.n == 0 and int(hist.counts.sum()) == 0


def test_if_subgraph_constant_weights_recursively(models):
    h = open_model(models["if"])
    assert h.param_count == W_THEN.size + W_ELSE.size + W_INNER.size
    assert h.meta["weights_by_place"]["subgraphs"] == h.param_count and h.meta["has_subgraphs"]
    rows = {r.name: r for r in layer_inventory(h)}
    assert rows["w_then"].location == "If node branch > then_branch > Constant node const_then"
    assert rows["w_else"].location == "If node branch > else_branch > Constant node const_else"
    assert rows["w_inner"].location == ("If node branch > then_branch > If node inner_if > then_branch > "
                                        "Constant node const_inner")
    assert (rows["w_inner"].op_type, rows["w_inner"].layer) == ("MatMul", "inner_mm")


@pytest.mark.parametrize("which", ["const", "if"])
def test_stats_and_histograms_match_numpy(models, which):
    h = open_model(models[which])
    ref = {"W": W, "b": B, "w_then": W_THEN, "w_else": W_ELSE, "w_inner": W_INNER}
    stats = compute_stats(h)
    assert stats and [r.name for r in stats] == [r.name for r in layer_inventory(h)]
    for r in stats:
        a = ref[r.name].astype(np.float64)
        assert r.min == pytest.approx(a.min()) and r.max == pytest.approx(a.max())
        assert r.mean == pytest.approx(a.mean(), abs=1e-6) and r.std == pytest.approx(a.std(), rel=1e-5)
        hist = histogram(h, r.name, bins=8)
        counts, _ = np.histogram(a, bins=8, range=(a.min(), a.max()))
        assert hist.n == a.size and hist.counts.tolist() == counts.tolist()


# --------------------------------------------------------------------------- `slimline inspect`

def _inspect(path: Path, *args: str) -> tuple[int, str, str]:
    from slimline.core.cli import run

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = run(["inspect", str(path), *args])
    return rc, out.getvalue(), err.getvalue()


def test_inspect_text_lists_locations_and_inf_constants(models):
    rc, text, err = _inspect(models["const"])
    assert rc == 0, err
    assert "params    15" in text and "2 weight tensors" in text
    assert "Constant node const_W" in text and "15 in Constant nodes" in text
    assert "5 other tensors, not weights (3 scalars, 2 shape/index tensors)" in text
    lo_line = next(line for line in text.splitlines() if line.startswith("lo "))
    assert "-inf" in lo_line and "scalar" in lo_line
    rc, text, err = _inspect(models["if"], "--no-stats")
    assert rc == 0, err
    assert "If node branch > then_branch > If node inner_if > then_branch > Constant node const_inner" in text


def test_inspect_json_is_strict_json(models):
    def no_nan(tok: str) -> None:
        raise AssertionError(f"invalid JSON token {tok}")

    rc, text, err = _inspect(models["const"], "--json")
    assert rc == 0, err
    doc = json.loads(text, parse_constant=no_nan)
    assert doc["model"]["param_count"] == 15
    assert [d["name"] for d in doc["layers"]] == ["W", "b"]
    assert doc["layers"][0]["location"] == "Constant node const_W" and doc["layers"][0]["std"] > 0
    assert {d["name"]: d["value"] for d in doc["constants"]}["lo"] == "-inf"


def test_render_tolerates_rows_without_statistics(models):
    """A float row whose values are all ±inf has no min/std: the table prints '-' instead of crashing."""
    h = open_model(models["const"])
    rows = compute_stats(h, ["W", "lo"])
    buf = io.StringIO()
    print_inspect(h, rows, as_json=False, limit=10, out=buf)
    line = next(line for line in buf.getvalue().splitlines() if line.startswith("lo "))
    assert " - " in line and "0/1" in line


# --------------------------------------------------------------------------- folding

@pytest.mark.parametrize("which", ["const", "if"])
def test_fold_constants_to_initializers(models, which):
    import onnx

    from slimline.core.models.onnx_files import iter_graphs

    model = onnx.load(str(models[which]))
    before = model.SerializeToString()
    folded = fold_constants_to_initializers(model)
    assert model.SerializeToString() == before, "the input model must not change"
    onnx.checker.check_model(folded, full_check=True)
    assert count_constant_nodes(folded) == 0
    inits = {t.name for g in iter_graphs(folded.graph) for t in g.initializer}
    weights = {"const": {"W", "b"}, "if": {"w_then", "w_else", "w_inner"}}[which]
    assert weights <= inits
    if which == "if":  # subgraph constants become initializers of their own subgraph
        then_g = next(a.g for a in folded.graph.node[0].attribute if a.name == "then_branch")
        assert [t.name for t in then_g.initializer] == ["w_then"]
    x = RNG.standard_normal((2, 4) if which == "const" else (1, 4)).astype(np.float32)
    feeds_list = [{"x": x}] if which == "const" else [{"x": x, "cond": np.array(c)} for c in (True, False)]
    for feeds in feeds_list:
        ref = _run(models[which], feeds)
        got = _run(folded.SerializeToString(), feeds)
        for a, b in zip(ref, got):
            np.testing.assert_array_equal(a, b)
    # the folded file is the same model to the engine: same weights, now as initializers
    path = models[which].with_name(f"{which}_folded.onnx")
    onnx.save(folded, str(path))
    h, h0 = open_model(path), open_model(models[which])
    assert h.param_count == h0.param_count
    assert h.meta["weights_by_place"]["constant_nodes"] == 0


def test_folded_weights_are_found_by_onnxruntime_quantizer(models, tmp_path):
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folded = tmp_path / "folded.onnx"
    onnx.save(fold_constants_to_initializers(onnx.load(str(models["const"]))), str(folded))
    q = tmp_path / "q.onnx"
    quantize_dynamic(str(folded), str(q), weight_type=QuantType.QInt8)
    qm = onnx.load(str(q))
    int8 = [t.name for t in qm.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert any(n.startswith("W") for n in int8), int8
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    ref, got = _run(models["const"], {"x": x}), _run(q, {"x": x})
    assert np.allclose(ref[0], got[0], atol=0.1)


def test_fold_keeps_constants_that_are_graph_outputs():
    from onnx import TensorProto, helper

    graph = helper.make_graph([_const("c", W)], "g", [], [helper.make_tensor_value_info("c", TensorProto.FLOAT,
                                                                                         [4, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    folded = fold_constants_to_initializers(model)
    assert count_constant_nodes(folded) == 1 and not folded.graph.initializer


# --------------------------------------------------------------------------- checkpoints

def test_training_checkpoint_counts_the_model_only(tmp_path):
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(3, 4)).sum().backward()
    opt.step()
    path = tmp_path / "ckpt.pt"
    torch.save({"step": 3, "model_state": net.state_dict(), "optimizer_state": opt.state_dict()}, path)
    h = open_model(path)
    n = sum(p.numel() for p in net.parameters())
    assert h.param_count == n and sum(r.params for r in layer_inventory(h)) == n
    assert h.meta["state_key"] == "model_state" and h.meta["left_out"] == ["step", "optimizer_state"]
    rc, text, err = _inspect(path)
    assert rc == 0 and "left out: step, optimizer_state" in text


def test_constant_attribute_forms():
    """value_floats is a weight vector, value_int(s) are indices, sparse_value is densified, strings are skipped."""
    from onnx import helper, numpy_helper

    from slimline.core.models.onnx_files import _kind, constant_value

    sparse = helper.make_sparse_tensor(numpy_helper.from_array(np.array([1.5, -2.0], np.float32), "v"),
                                       numpy_helper.from_array(np.array([1, 4], np.int64), "i"), [2, 3])
    cases = {
        "floats": (helper.make_node("Constant", [], ["a"], value_floats=[1.0, 2.0, 3.0]), "weight", [1.0, 2.0, 3.0]),
        "float": (helper.make_node("Constant", [], ["b"], value_float=0.5), "scalar", [0.5]),
        "ints": (helper.make_node("Constant", [], ["c"], value_ints=[1, 2]), "index", [1, 2]),
        "int": (helper.make_node("Constant", [], ["d"], value_int=7), "index", [7]),
        "sparse": (helper.make_node("Constant", [], ["e"], sparse_value=sparse), "weight", [0, 1.5, 0, 0, -2.0, 0]),
    }
    for label, (node, kind, values) in cases.items():
        t, index = constant_value(node)
        assert _kind(t, index) == kind, label
        assert numpy_helper.to_array(t).ravel().tolist() == values, label
    assert constant_value(helper.make_node("Constant", [], ["s"], value_strings=["x"])) is None
    bias = numpy_helper.from_array(np.array([0.25], np.float32), "bias")
    assert _kind(bias, False) == "scalar" and _kind(bias, False, "Conv") == "weight"  # a 1-channel Conv bias
