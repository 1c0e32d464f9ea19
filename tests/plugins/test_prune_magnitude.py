"""Magnitude pruning: exact sparsity, honest size report, skip list, N:M, random baseline, ONNX."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from slimline.core.errors import Cancelled
from slimline.core.handle import TensorSpec
from slimline.core.plugin import CancelToken, StepContext
from slimline.plugins.prune import MagnitudePrune
from slimline.plugins.prune.sparsity import WeightSlot, nm_masks, nm_valid, unstructured_masks

P = MagnitudePrune.Params


def _tiny_cnn_handle(tmp_path: Path):
    import torch
    import torch.nn as nn

    from slimline.core.torchmodel import save_torch_module

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    h = save_torch_module(net, tmp_path / "cnn.safetensors",
                          inputs=[TensorSpec(name="x", shape=["batch", 1, 8, 8])],
                          outputs=[TensorSpec(name="y", shape=["batch", 10])])
    return h, net


def _ctx(tmp_path: Path, name: str = "out") -> StepContext:
    return StepContext(work_dir=tmp_path / name)


def _weights(path: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: v for k, v in load_file(path).items() if k.endswith(".weight") and v.ndim >= 2}


def test_fifty_percent_exact_and_honest_sizes(tmp_path):
    h, _ = _tiny_cnn_handle(tmp_path)
    before = Path(h.path).read_bytes()
    out = MagnitudePrune().run(h, P(sparsity=0.5), _ctx(tmp_path))
    assert Path(h.path).read_bytes() == before, "input file must not change"
    for name, w in _weights(out.model.path).items():
        assert (w == 0).sum() == round(0.5 * w.size), name
    # biases and norms untouched
    from safetensors.numpy import load_file
    src, dst = load_file(h.path), load_file(out.model.path)
    for k in src:
        if not (k.endswith(".weight") and src[k].ndim >= 2):
            np.testing.assert_array_equal(src[k], dst[k], err_msg=k)
    m = out.metrics
    assert m["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert m["bytes"] == m["bytes_before"]            # not smaller on disk
    assert m["zip_bytes"] < 0.8 * m["zip_bytes_before"]  # but smaller compressed
    assert any("latency does not drop" in n for n in out.notes)
    rows = out.tables["sparsity"]
    assert {r["layer"] for r in rows} == {"0", "3", "8", "10"}
    assert all(r["sparsity"] == pytest.approx(0.5, abs=0.01) for r in rows)


def test_pruned_model_reloads_and_runs(tmp_path):
    import torch

    from slimline.core.torchmodel import load_torch_module

    h, net = _tiny_cnn_handle(tmp_path)
    out = MagnitudePrune().run(h, P(sparsity=0.3), _ctx(tmp_path))
    mod = load_torch_module(out.model)
    x = torch.randn(2, 1, 8, 8)
    assert mod(x).shape == (2, 10)
    assert out.model.param_count == h.param_count


def test_global_scope_hits_overall_target_unevenly(tmp_path):
    h, _ = _tiny_cnn_handle(tmp_path)
    out = MagnitudePrune().run(h, P(sparsity=0.6, scope="global"), _ctx(tmp_path))
    ws = _weights(out.model.path)
    zeros = sum(int((w == 0).sum()) for w in ws.values())
    total = sum(w.size for w in ws.values())
    assert zeros == round(0.6 * total)
    per_layer = [r["sparsity"] for r in out.tables["sparsity"]]
    assert max(per_layer) - min(per_layer) > 0.05


def test_skip_list_and_threshold(tmp_path):
    h, _ = _tiny_cnn_handle(tmp_path)
    out = MagnitudePrune().run(h, P(sparsity=0.5, skip=["1?", "0"]), _ctx(tmp_path))
    ws = _weights(out.model.path)
    assert (ws["0.weight"] == 0).sum() == 0 and (ws["10.weight"] == 0).sum() == 0
    assert (ws["3.weight"] == 0).mean() == pytest.approx(0.5, abs=1e-3)
    skipped = {r["layer"] for r in out.tables["sparsity"] if r["status"] == "skipped"}
    assert skipped == {"0", "10"}

    src = _weights(h.path)
    out2 = MagnitudePrune().run(h, P(target="threshold", threshold=0.05), _ctx(tmp_path, "thr"))
    for k, w in _weights(out2.model.path).items():
        small = np.abs(src[k]) < 0.05
        assert (w[small] == 0).all() and (w[~small] == src[k][~small]).all()


def test_two_four_pattern(tmp_path):
    h, _ = _tiny_cnn_handle(tmp_path)
    out = MagnitudePrune().run(h, P(pattern="n:m", n=2, m=4), _ctx(tmp_path))
    ws = _weights(out.model.path)
    for name in ("3.weight", "8.weight", "10.weight"):
        keep = ws[name] != 0
        assert nm_valid(keep, 1, 2, 4), name
        assert keep.mean() == pytest.approx(0.5, abs=0.01)
    # first conv has 1 input channel: cannot form groups of 4 → left dense with a reason
    row = next(r for r in out.tables["sparsity"] if r["layer"] == "0")
    assert row["status"] == "skipped" and "multiple of 4" in row["reason"]
    # the largest weights survive in each group
    w = np.arange(16, dtype=np.float32).reshape(2, 8) * np.array([1, -1] * 8, dtype=np.float32).reshape(2, 8)
    res = nm_masks([WeightSlot("w", "Linear", w, 1)], n=2, m=4, criterion="l1", seed=0)
    np.testing.assert_array_equal(res.keep["w"][0], [False, False, True, True] * 2)


def test_random_criterion_is_seeded(tmp_path):
    h, _ = _tiny_cnn_handle(tmp_path)
    a = MagnitudePrune().run(h, P(criterion="random", seed=3), _ctx(tmp_path, "a"))
    b = MagnitudePrune().run(h, P(criterion="random", seed=3), _ctx(tmp_path, "b"))
    c = MagnitudePrune().run(h, P(criterion="random", seed=4), _ctx(tmp_path, "c"))
    l1 = MagnitudePrune().run(h, P(criterion="l1"), _ctx(tmp_path, "d"))
    wa, wb, wc, wl = (_weights(o.model.path) for o in (a, b, c, l1))
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k])
        assert (wa[k] == 0).mean() == pytest.approx(0.5, abs=1e-3)
    assert any(not np.array_equal(wa[k] == 0, wc[k] == 0) for k in wa)
    # random drops bigger weights than L1 does: more weight mass removed
    src = _weights(h.path)
    mass = lambda w: sum(float(np.abs(src[k][w[k] == 0]).sum()) for k in w)  # noqa: E731
    assert mass(wa) > 2 * mass(wl)


def test_unstructured_masks_exact_with_ties():
    w = np.zeros((4, 10), dtype=np.float32)  # all ties
    res = unstructured_masks([WeightSlot("a", "Linear", w), WeightSlot("b", "Linear", w.copy())],
                             sparsity=0.35, scope="global", criterion="l1", seed=0)
    assert sum(int((~k).sum()) for k in res.keep.values()) == 28


def test_bad_params_name_the_field():
    with pytest.raises(ValidationError, match="sparsity"):
        P(sparsity=1.5)
    with pytest.raises(ValidationError, match=r"n \(4\) must be smaller than m"):
        P(pattern="n:m", n=4, m=4)
    with pytest.raises(ValidationError, match="criterion"):
        P(criterion="random", target="threshold", threshold=0.1)
    with pytest.raises(ValidationError, match="scope"):
        P(scope="everything")
    with pytest.raises(ValidationError, match="unknown_field|extra"):
        P(unknown_field=1)


def test_check_reports_skip_list_covering_everything(tmp_path):
    h, _ = _tiny_cnn_handle(tmp_path)
    assert MagnitudePrune().check(h, P()) == []
    probs = MagnitudePrune().check(h, P(skip=["*"]))
    assert probs and probs[0].field == "skip"


def test_cancel_before_run_writes_nothing(tmp_path):
    h, _ = _tiny_cnn_handle(tmp_path)
    tok = CancelToken()
    tok.cancel()
    ctx = StepContext(work_dir=tmp_path / "cancelled", cancel=tok)
    with pytest.raises(Cancelled):
        MagnitudePrune().run(h, P(), ctx)
    assert not (tmp_path / "cancelled").exists() or not any((tmp_path / "cancelled").iterdir())


# --- ONNX --------------------------------------------------------------------------------------
def _tiny_onnx(tmp_path: Path):
    """Conv → Relu → Flatten → MatMul → Add → Relu → Gemm(transB=1), built by hand (no exporter)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(8, 4, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.normal(size=(8,)).astype(np.float32), "conv_b"),
        numpy_helper.from_array(rng.normal(size=(8 * 6 * 6, 32)).astype(np.float32) * 0.1, "fc1_w"),
        numpy_helper.from_array(rng.normal(size=(32,)).astype(np.float32), "fc1_b"),
        numpy_helper.from_array(rng.normal(size=(10, 32)).astype(np.float32), "fc2_w"),
        numpy_helper.from_array(rng.normal(size=(10,)).astype(np.float32), "fc2_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[0, 0, 0, 0]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "fc1_w"], ["m"], name="fc1"),
        helper.make_node("Add", ["m", "fc1_b"], ["a"], name="fc1_add"),
        helper.make_node("Relu", ["a"], ["h"], name="relu2"),
        helper.make_node("Gemm", ["h", "fc2_w", "fc2_b"], ["y"], name="fc2", transB=1),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    from slimline.core.handle import ModelHandle
    return ModelHandle(path=str(path), format="onnx", family="onnx", files=[str(path)],
                       inputs=[TensorSpec(name="x", shape=["n", 4, 8, 8])],
                       outputs=[TensorSpec(name="y", shape=["n", 10])], bytes_on_disk=path.stat().st_size)


def test_onnx_initializers_zeroed_and_model_runs(tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    h = _tiny_onnx(tmp_path)
    out = MagnitudePrune().run(h, P(sparsity=0.5), _ctx(tmp_path))
    assert out.model.family == "onnx" and out.model.path.endswith(".onnx")
    proto = onnx.load(out.model.path)
    arrs = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for name in ("conv_w", "fc1_w", "fc2_w"):
        assert (arrs[name] == 0).sum() == round(0.5 * arrs[name].size), name
    for name in ("conv_b", "fc1_b", "fc2_b"):
        assert (arrs[name] != 0).all(), name
    x = np.random.default_rng(1).normal(size=(3, 4, 8, 8)).astype(np.float32)
    y = ort.InferenceSession(out.model.path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert y.shape == (3, 10) and np.isfinite(y).all()
    assert out.metrics["bytes"] == pytest.approx(out.metrics["bytes_before"], rel=0.01)
    assert out.metrics["zip_bytes"] < out.metrics["zip_bytes_before"]


def test_onnx_two_four_uses_gemm_transb_input_axis(tmp_path):
    import onnx
    from onnx import numpy_helper

    h = _tiny_onnx(tmp_path)
    out = MagnitudePrune().run(h, P(pattern="n:m"), _ctx(tmp_path))
    arrs = {t.name: numpy_helper.to_array(t) for t in onnx.load(out.model.path).graph.initializer}
    assert nm_valid(arrs["fc2_w"] != 0, 1, 2, 4)   # Gemm transB=1: [out, in]
    assert nm_valid(arrs["fc1_w"] != 0, 0, 2, 4)   # MatMul: [in, out]
    assert nm_valid(arrs["conv_w"] != 0, 1, 2, 4)
