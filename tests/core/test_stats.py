"""Layer inventory, exact weight statistics and histograms across formats, checked against NumPy."""
from __future__ import annotations

from pathlib import Path

import modelfiles as mf
import numpy as np
import pytest

from slimline.core.errors import SlimlineError
from slimline.core.models import open_model
from slimline.core.stats import compute_stats, constant_inventory, histogram, layer_inventory, tensor_stats


def _ref_stats(a: np.ndarray) -> dict[str, float]:
    a = np.asarray(a, dtype=np.float64).ravel()
    f = a[np.isfinite(a)]
    std = f.std()
    return {"min": f.min(), "max": f.max(), "mean": f.mean(), "std": std, "mean_abs": np.abs(f).mean(),
            "sparsity": float((a == 0).sum()) / a.size,
            "outlier_frac": float((np.abs(f - f.mean()) > 6 * std).sum()) / f.size,
            "nan_count": int(np.isnan(a).sum()), "inf_count": int(np.isinf(a).sum())}


def _assert_matches(row, ref, rel=1e-5):
    for k, v in ref.items():
        got = getattr(row, k) if not isinstance(row, dict) else row[k]
        assert got == pytest.approx(v, rel=rel, abs=1e-6), (k, got, v)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("stats")
    return {
        "onnx": mf.onnx_from_torch(d / "cnn.onnx"),
        "onnx_ext": mf.onnx_external(d / "ext"),
        "onnx_if": mf.onnx_with_if(d / "if.onnx"),
        "onnx_old": mf.onnx_old_opset9(d / "old.onnx"),
        "ts": mf.torchscript(d / "m.ts"),
        "sd": mf.state_dict_pt(d / "sd.pt"),
        "st": mf.plain_safetensors(d / "w.safetensors"),
        "archive": mf.slimline_archive(d / "a.safetensors"),
    }


def test_tensor_stats_matches_numpy_with_nan_inf_zeros_outliers():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(700_001).astype(np.float32) * 0.05 + 3.0   # mean >> std: cancellation-prone
    a[:5000] = 0.0
    a[10] = 50.0                       # outliers beyond 6 std
    a[11] = -40.0
    a[300_000] = np.nan
    a[300_001] = np.inf
    a[600_000] = -np.inf
    s = tensor_stats(a)
    ref = _ref_stats(a)
    _assert_matches(s, ref)
    assert s["nan_count"] == 1 and s["inf_count"] == 2
    assert s["outlier_frac"] > 0


@pytest.mark.parametrize("dtype", ["float16", "float64", "int8"])
def test_tensor_stats_other_dtypes(dtype):
    a = (np.random.default_rng(1).standard_normal((64, 33)) * 20).astype(dtype)
    _assert_matches(tensor_stats(a), _ref_stats(a), rel=1e-4)


def test_all_nan_tensor_is_safe():
    s = tensor_stats(np.full(10, np.nan, np.float32))
    assert s["nan_count"] == 10 and "mean" not in s


def test_onnx_inventory_names_consuming_ops(files):
    rows = {r.name: r for r in layer_inventory(open_model(files["onnx"]))}
    ops = {r.op_type for r in rows.values()}
    assert {"Conv", "Gemm"} <= ops
    conv = next(r for r in rows.values() if r.op_type == "Conv" and len(r.shape) == 4)
    assert conv.shape == [4, 1, 3, 3] and conv.dtype == "float32" and conv.params == 36 and conv.bytes == 144
    assert conv.layer  # the consuming node's name


def test_onnx_stats_match_initializers(files):
    import onnx
    from onnx import numpy_helper

    h = open_model(files["onnx"])
    model = onnx.load(str(files["onnx"]))
    ref = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    rows = compute_stats(h)
    assert {r.name for r in rows} == set(ref)
    for r in rows:
        _assert_matches(r, _ref_stats(ref[r.name]))


def test_onnx_external_data_stats(files):
    import onnx
    from onnx import numpy_helper

    h = open_model(files["onnx_ext"])
    model = onnx.load(str(files["onnx_ext"]))
    ref = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for r in compute_stats(h):
        _assert_matches(r, _ref_stats(ref[r.name]))


def test_onnx_subgraph_and_old_opset_weights(files):
    h = open_model(files["onnx_if"])
    rows = {r.name: r for r in compute_stats(h)}
    assert set(rows) == {"then.w", "else.w"}  # the scalar "zero" (a Greater threshold) is not a weight
    assert rows["then.w"].op_type == "MatMul" and rows["then.w"].layer == "then_mm"
    assert rows["then.w"].location == "If node branch > then_branch > initializer"
    assert {r.name: (r.kind, r.value) for r in constant_inventory(h)} == {"zero": ("scalar", "0")}
    old = {r.name: r for r in layer_inventory(open_model(files["onnx_old"]))}
    assert old["fc.weight"].op_type == "Gemm" and old["fc.weight"].layer == "fc"


@pytest.mark.parametrize("key", ["ts", "sd", "st", "archive"])
def test_torch_family_stats_match_state_dict(files, key):
    h = open_model(files[key])
    sd = mf.tiny_seq().state_dict()
    rows = {r.name: r for r in compute_stats(h)}
    assert set(rows) == set(sd)
    for name, t in sd.items():
        _assert_matches(rows[name], _ref_stats(t.numpy()))
    if key in ("ts", "archive"):
        assert rows["0.weight"].op_type == "Linear" and rows["0.weight"].layer == "0"


def test_bfloat16_safetensors_decoded(tmp_path):
    import torch
    from safetensors.torch import save_file

    t = torch.randn(40, 30).to(torch.bfloat16)
    save_file({"w": t}, str(tmp_path / "bf.safetensors"))
    h = open_model(tmp_path / "bf.safetensors")
    (row,) = compute_stats(h)
    assert row.dtype == "bfloat16" and row.bytes == 40 * 30 * 2
    _assert_matches(row, _ref_stats(t.float().numpy()))


def test_hf_inventory_has_module_classes(tmp_path):
    h = open_model(mf.hf_folder(tmp_path / "bert"))
    rows = {r.name: r for r in layer_inventory(h)}
    q = next(r for n, r in rows.items() if n.endswith("attention.self.query.weight"))
    assert q.op_type == "Linear" and q.shape == [32, 32]
    emb = next(r for n, r in rows.items() if n.endswith("word_embeddings.weight"))
    assert emb.op_type == "Embedding"
    assert sum(r.params for r in rows.values()) >= h.param_count


def test_names_filter_progress_and_unknown_name(files):
    h = open_model(files["st"])
    seen = []
    rows = compute_stats(h, names=["2.weight"], progress=lambda f, m: seen.append((f, m)))
    assert [r.name for r in rows] == ["2.weight"] and seen[-1] == (1.0, "2.weight")
    with pytest.raises(SlimlineError, match="no weight tensor named 'nope'"):
        compute_stats(h, names=["nope"])
    with pytest.raises(SlimlineError, match="no weight tensor named 'nope'"):
        histogram(h, "nope")


def _big_onnx(tmp_path: Path, n: int = 1_500_000) -> tuple[Path, np.ndarray]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w = rng.standard_normal((n // 1000, 1000)).astype(np.float32)
    w[0, :7] = [np.nan, np.inf, -np.inf, 0, 0, 0, 30]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n // 1000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1000])],
        initializer=[numpy_helper.from_array(w, "W")])
    p = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(p))
    return p, w


def test_histograms_sampled_then_exact(tmp_path):
    p, w = _big_onnx(tmp_path)
    h = open_model(p)
    finite = w[np.isfinite(w)]
    quick = histogram(h, "W", bins=32, sample=100_000)
    assert quick.sampled and quick.n <= 100_000 and quick.total == w.size and len(quick.edges) == 33
    exact = histogram(h, "W", bins=32)
    assert not exact.sampled and exact.n == finite.size and exact.counts.sum() == finite.size
    ref, edges = np.histogram(finite, bins=32, range=(finite.min(), finite.max()))
    np.testing.assert_allclose(exact.edges, edges, rtol=1e-6, atol=1e-5)  # numpy keeps float32 edges
    assert np.abs(exact.counts - ref).sum() <= 4   # float32 rounding exactly at bin edges
    # the sample follows the same distribution: compare on common bins
    ref_q, _ = np.histogram(finite, bins=quick.edges)
    assert np.abs(quick.counts / quick.n - ref_q / ref_q.sum()).max() < 0.01


def test_histogram_after_stats_uses_cached_range(tmp_path):
    p, w = _big_onnx(tmp_path, n=200_000)
    h = open_model(p)
    (row,) = compute_stats(h)
    hist = histogram(h, "W", bins=10)
    assert hist.edges[0] == row.min and hist.edges[-1] == row.max


def test_log_histogram_of_magnitudes(files):
    h = open_model(files["st"])
    sd = mf.tiny_seq().state_dict()["0.weight"].numpy()
    hist = histogram(h, "0.weight", bins=8, log=True)
    mags = np.log10(np.abs(sd[sd != 0]))
    assert hist.log and hist.n == mags.size
    assert hist.edges[0] == pytest.approx(mags.min(), rel=1e-5)
    assert hist.edges[-1] == pytest.approx(mags.max(), rel=1e-5)


def test_cache_invalidates_when_file_changes(tmp_path):
    from safetensors.numpy import save_file

    p = tmp_path / "w.safetensors"
    save_file({"w": np.ones(10, np.float32)}, str(p))
    assert compute_stats(open_model(p))[0].mean == 1.0
    import os
    import time

    save_file({"w": np.full(10, 2.0, np.float32)}, str(p))
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    time.sleep(0.01)
    assert compute_stats(open_model(p))[0].mean == 2.0
