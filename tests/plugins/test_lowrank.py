"""Low-rank factorization: ranks and shapes, skip rule, closeness, data-aware SVD, ONNX rewrite."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from slimline.core.errors import Cancelled, StepFailed
from slimline.core.handle import ModelHandle, TensorSpec
from slimline.core.plugin import CancelToken, StepContext
from slimline.plugins.lowrank import LowRankFactorize
from slimline.plugins.lowrank.svd import RankRule, break_even_rank, choose_rank, factorize

P = LowRankFactorize.Params


def _low_rank_matrix(m: int, n: int, rank: int, seed: int, noise: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(m, rank)) @ rng.normal(size=(rank, n)) / np.sqrt(rank * n)
    return (w + noise * rng.normal(size=(m, n)) / np.sqrt(n)).astype(np.float32)


def _mlp_handle(tmp_path: Path, *, with_conv: bool = False, noise: float = 0.05):
    """An MLP whose hidden weights have a decaying spectrum (like trained weights, unlike random init)."""
    import torch
    import torch.nn as nn

    from slimline.core.torchmodel import save_torch_module

    torch.manual_seed(0)
    if with_conv:
        net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))
        shape = ["batch", 3, 4, 4]
    else:
        net = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 80), nn.ReLU(), nn.Linear(80, 10))
        shape = ["batch", 64]
    with torch.no_grad():
        for i, mod in enumerate(m for m in net if isinstance(m, nn.Linear)):
            o, n = mod.weight.shape
            mod.weight.copy_(torch.from_numpy(_low_rank_matrix(o, n, 8, i, noise=noise)))
        if with_conv:  # second conv: rank 4 as a [32, 32·3·3] matrix
            net[2].weight.copy_(torch.from_numpy(_low_rank_matrix(32, 288, 4, 9)).reshape(32, 32, 3, 3))
    h = save_torch_module(net.eval(), tmp_path / "net.safetensors", inputs=[TensorSpec(name="x", shape=shape)],
                          outputs=[TensorSpec(name="y", shape=["batch", 10])])
    return h, net.eval()


def test_rank_rules_and_break_even():
    sv = np.array([4.0, 2.0, 1.0, 1.0])            # energies 16, 4, 1, 1 of 22
    assert choose_rank(sv, RankRule("energy", 16 / 22)) == 1
    assert choose_rank(sv, RankRule("energy", 0.9)) == 2
    assert choose_rank(sv, RankRule("energy", 1.0)) == 4
    assert choose_rank(sv, RankRule("ratio", 0.5)) == 2
    assert choose_rank(sv, RankRule("rank", 99)) == 4
    assert break_even_rank(100, 100) == 50
    w = _low_rank_matrix(40, 60, 5, 0)
    f = factorize(w, RankRule("rank", 5))
    assert f.first.shape == (5, 60) and f.second.shape == (40, 5)
    np.testing.assert_allclose(f.second @ f.first, w, atol=1e-5)
    # rank 24 ≥ 40·60/100 = 24 → not worth it
    skip = factorize(w, RankRule("rank", 24))
    assert skip.first is None and "break-even" in skip.skip_reason


def test_linear_layers_factorized_shapes_and_table(tmp_path):
    from safetensors.numpy import load_file

    h, _ = _mlp_handle(tmp_path)
    out = LowRankFactorize().run(h, P(rank_mode="ratio", ratio=0.1, overrides={"4": 9}, keep_output_layer=False),
                                 StepContext(work_dir=tmp_path / "o"))
    rows = {r["layer"]: r for r in out.tables["lowrank"]}
    assert rows["0"]["rank"] == 6 and rows["0"]["full_rank"] == 64 and rows["0"]["status"] == "factorized"
    assert rows["2"]["rank"] == 8 and rows["2"]["params_after"] == 8 * (96 + 80) + 80
    # 10×80 at rank 9: 9·90 = 810 ≥ 800 parameters → skipped with the reason
    assert rows["4"]["status"] == "skipped" and "break-even 8.9" in rows["4"]["reason"]
    w = load_file(out.model.path)
    assert w["0.0.weight"].shape == (6, 64) and w["0.1.weight"].shape == (96, 6) and "0.0.bias" not in w
    assert w["2.0.weight"].shape == (8, 96) and w["2.1.bias"].shape == (80,)
    assert out.metrics["params_after"] < out.metrics["params_before"]
    assert out.metrics["param_ratio"] == pytest.approx(out.metrics["params_after"] / out.metrics["params_before"])


def test_outputs_close_at_high_energy_and_reload(tmp_path):
    import torch

    from slimline.core.torchmodel import load_torch_module

    h, net = _mlp_handle(tmp_path, noise=0.0)
    out = LowRankFactorize().run(h, P(energy=0.9999), StepContext(work_dir=tmp_path / "o"))
    rows = {r["layer"]: r for r in out.tables["lowrank"]}
    assert [rows[k]["rank"] for k in ("0", "2")] == [8, 8]   # the constructed rank is found
    assert rows["4"]["status"] == "skipped" and "output layer" in rows["4"]["reason"]
    x = torch.randn(16, 64)
    with torch.no_grad():
        ref, got = net(x), load_torch_module(out.model)(x)
    rel = float((got - ref).norm() / ref.norm())
    assert rel < 0.02, rel


def test_overrides_and_skip(tmp_path):
    h, _ = _mlp_handle(tmp_path)
    out = LowRankFactorize().run(h, P(energy=0.99, overrides={"0": 3, "2": 0.5}, skip=["4"]),
                                 StepContext(work_dir=tmp_path / "o"))
    rows = {r["layer"]: r for r in out.tables["lowrank"]}
    assert rows["0"]["rank"] == 3 and rows["0"]["rule"] == "rank 3"
    assert rows["2"]["energy_kept"] >= 0.5 and rows["2"]["rule"] == "energy 0.5"
    assert rows["4"]["status"] == "skipped" and rows["4"]["reason"] == "in skip list"


def test_conv_factorization(tmp_path):
    import torch

    from slimline.core.torchmodel import load_torch_module

    h, net = _mlp_handle(tmp_path, with_conv=True)
    off = LowRankFactorize().run(h, P(energy=0.5), StepContext(work_dir=tmp_path / "a"))
    assert all(r["op"] != "Conv2d" or r["status"] == "skipped" for r in off.tables["lowrank"])
    on = LowRankFactorize().run(h, P(rank_mode="ratio", ratio=0.25, include_conv=True),
                                StepContext(work_dir=tmp_path / "b"))
    rows = {r["layer"]: r for r in on.tables["lowrank"]}
    assert rows["2"]["status"] == "factorized" and rows["2"]["shape"] == [32, 288] and rows["2"]["rank"] == 8
    assert rows["0"]["status"] == "factorized" and rows["0"]["rank"] == 7   # [32, 27]: break-even 14.6
    mod = load_torch_module(on.model)
    assert tuple(mod[2][0].weight.shape) == (8, 32, 3, 3) and tuple(mod[2][1].weight.shape) == (32, 8, 1, 1)
    assert mod(torch.randn(2, 3, 4, 4)).shape == (2, 10)
    # the rank-4 conv is found at rank 4 and reproduced
    full = LowRankFactorize().run(h, P(energy=0.9999, include_conv=True, skip=["0", "5", "7"]),
                                  StepContext(work_dir=tmp_path / "c"))
    assert {r["layer"]: r for r in full.tables["lowrank"]}["2"]["rank"] == 4
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        a, b = net(x), load_torch_module(full.model)(x)
    assert float((a - b).norm() / a.norm()) < 1e-3


def test_data_aware_beats_plain_at_equal_rank(tmp_path):
    """Inputs with uneven, correlated scales: output error plain > diag > whiten, same parameter count."""
    import torch

    from slimline.core.data import DataBundle, Dataset
    from slimline.core.torchmodel import load_torch_module

    h, net = _mlp_handle(tmp_path)
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(64, 64)) / 8
    xs = ((rng.normal(size=(512, 64)) @ mix) * np.exp(rng.normal(0, 1.5, size=64))).astype(np.float32)
    ds = Dataset(name="skewed", source="test", inputs={"x": xs[:256]})
    params = dict(rank_mode="ratio", ratio=0.1, skip=["2", "4"], calibration_batches=8)
    outs = {"plain": LowRankFactorize().run(h, P(**params), StepContext(work_dir=tmp_path / "p"))}
    for method in ("diag", "whiten"):
        outs[method] = LowRankFactorize().run(
            h, P(**params, data_aware=True, data_aware_method=method),
            StepContext(work_dir=tmp_path / method, data=DataBundle(calibration=ds)))
        assert f"data-aware SVD ({method})" in outs[method].notes[0]
    assert len({o.model.param_count for o in outs.values()}) == 1
    mods = {k: load_torch_module(o.model)[0] for k, o in outs.items()}

    def errors(rows: np.ndarray) -> dict[str, float]:
        x = torch.from_numpy(rows)
        with torch.no_grad():
            ref = net[0](x)
            return {k: float((m(x) - ref).norm() / ref.norm()) for k, m in mods.items()}
    calib, held_out = errors(xs[:256]), errors(xs[256:])
    assert calib["whiten"] < calib["diag"] < 0.8 * calib["plain"], calib   # whitening is the optimum on X
    assert max(held_out["whiten"], held_out["diag"]) < 0.8 * held_out["plain"], held_out
    with pytest.raises(StepFailed, match="calibration"):
        LowRankFactorize().run(h, P(data_aware=True), StepContext(work_dir=tmp_path / "x"))


def test_data_aware_conv_patches(tmp_path):
    """Conv whitening uses unfolded input patches in the weight's (c, kh, kw) order."""
    import torch

    from slimline.core.data import DataBundle, Dataset
    from slimline.core.torchmodel import load_torch_module

    h, net = _mlp_handle(tmp_path, with_conv=True)
    rng = np.random.default_rng(1)
    xs = (rng.normal(size=(96, 3, 4, 4)) * np.array([5.0, 1.0, 0.1]).reshape(1, 3, 1, 1)).astype(np.float32)
    xs[:, 1] += xs[:, 0]
    bundle = DataBundle(calibration=Dataset("c", "t", {"x": xs[:64]}))
    params = dict(rank_mode="ratio", ratio=0.25, include_conv=True, skip=["5", "7"])
    plain = LowRankFactorize().run(h, P(**params), StepContext(work_dir=tmp_path / "p"))
    aware = LowRankFactorize().run(h, P(**params, data_aware=True), StepContext(work_dir=tmp_path / "a", data=bundle))
    x = torch.from_numpy(xs[:64])   # the calibration rows, where whitening is optimal
    with torch.no_grad():
        ref = net[0](x)
        e_plain = float((load_torch_module(plain.model)[0](x) - ref).norm() / ref.norm())
        e_aware = float((load_torch_module(aware.model)[0](x) - ref).norm() / ref.norm())
    assert e_aware < 0.7 * e_plain, (e_aware, e_plain)


def test_bad_params_name_the_field():
    with pytest.raises(ValidationError, match="energy"):
        P(energy=0.0)
    with pytest.raises(ValidationError, match="ratio"):
        P(ratio=1.5)
    with pytest.raises(ValidationError, match="overrides"):
        P(overrides={"fc": 0})
    with pytest.raises(ValidationError, match="overrides"):
        P(overrides={"fc": 1.5})
    with pytest.raises(ValidationError, match="rank_mode"):
        P(rank_mode="auto")


def test_check_finds_nothing_to_factorize(tmp_path):
    import torch.nn as nn

    from slimline.core.torchmodel import save_torch_module

    h = save_torch_module(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()), tmp_path / "c.safetensors",
                          inputs=[TensorSpec(name="x", shape=["b", 1, 5, 5])])
    probs = LowRankFactorize().check(h, P())
    assert probs and "no Linear layers" in probs[0].message and "include_conv" in probs[0].fix
    assert LowRankFactorize().check(h, P(include_conv=True)) == []


def test_cancel_before_run(tmp_path):
    h, _ = _mlp_handle(tmp_path)
    tok = CancelToken()
    tok.cancel()
    with pytest.raises(Cancelled):
        LowRankFactorize().run(h, P(), StepContext(work_dir=tmp_path / "c", cancel=tok))
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())


# --- ONNX ---------------------------------------------------------------------------------------
def _onnx_mlp(tmp_path: Path) -> tuple[ModelHandle, dict[str, np.ndarray]]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = {"w1": _low_rank_matrix(64, 48, 6, 1, 0.01),   # MatMul weight [in, out]
         "b1": np.linspace(-1, 1, 48).astype(np.float32),
         "w2": _low_rank_matrix(40, 48, 6, 2, 0.01),            # Gemm transB=1: [out, in]
         "b2": np.zeros(40, np.float32),
         "w3": _low_rank_matrix(48, 40, 6, 3, 0.01).T.copy()}   # Gemm transB=0: [in, out] = [40, 48]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"], name="fc1"),
             helper.make_node("Add", ["m1", "b1"], ["a1"], name="add1"),
             helper.make_node("Relu", ["a1"], ["h1"], name="relu1"),
             helper.make_node("Gemm", ["h1", "w2", "b2"], ["h2"], name="fc2", transB=1, alpha=0.5, beta=2.0),
             helper.make_node("Gemm", ["h2", "w3"], ["y"], name="fc3")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 48])],
                              [numpy_helper.from_array(v, k) for k, v in w.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "mlp.onnx"
    onnx.save(model, str(path))
    return ModelHandle(path=str(path), format="onnx", family="onnx", files=[str(path)],
                       inputs=[TensorSpec(name="x", shape=["n", 64])],
                       outputs=[TensorSpec(name="y", shape=["n", 48])]), w


def _ort(path: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_onnx_lowrank_runs_and_matches(tmp_path):
    import onnx

    h, _ = _onnx_mlp(tmp_path)
    kept = LowRankFactorize().run(h, P(energy=0.9999), StepContext(work_dir=tmp_path / "k"))
    assert {r["layer"]: r for r in kept.tables["lowrank"]}["fc3"]["reason"].startswith("output layer")
    out = LowRankFactorize().run(h, P(energy=0.9999, keep_output_layer=False), StepContext(work_dir=tmp_path / "o"))
    assert out.model.family == "onnx"
    proto = onnx.load(out.model.path)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("MatMul") == 4 and ops.count("Gemm") == 2, ops
    names = {i.name for i in proto.graph.initializer}
    assert not {"w1", "w2", "w3"} & names
    rows = {r["layer"]: r for r in out.tables["lowrank"]}
    assert all(rows[k]["status"] == "factorized" and rows[k]["rank"] <= 8 for k in ("fc1", "fc2", "fc3"))
    x = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)
    ref, got = _ort(h.path, x), _ort(out.model.path, x)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.02
    assert out.metrics["params_after"] < 0.45 * out.metrics["params_before"]


def test_onnx_data_aware(tmp_path):
    from slimline.core.data import DataBundle, Dataset

    h, _ = _onnx_mlp(tmp_path)
    rng = np.random.default_rng(0)
    xs = (rng.normal(size=(64, 64)) * np.exp(rng.normal(0, 1.5, size=64))).astype(np.float32)
    ctx = StepContext(work_dir=tmp_path / "d", data=DataBundle(calibration=Dataset("c", "t", {"x": xs})))
    out = LowRankFactorize().run(h, P(rank_mode="ratio", ratio=0.1, data_aware=True), ctx)
    got = _ort(out.model.path, xs)
    assert got.shape == (64, 48) and np.isfinite(got).all()
    assert "data-aware" in out.notes[0]
