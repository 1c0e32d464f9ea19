"""Size accounting, latency structure (never timings), accuracy and fidelity math."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from slimline.core.data import Dataset
from slimline.core.errors import DataError
from slimline.core.handle import ModelHandle, TensorSpec
from slimline.core.metrics import accuracy, environment, fidelity, measure_latency, measure_size, zip_size
from slimline.core.runtime import Session

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

IN = [TensorSpec(name="input", dtype="float32", shape=["batch", 1, 8, 8])]
OUT = [TensorSpec(name="logits", dtype="float32", shape=["batch", 3])]


def tiny_cnn(zero: bool = False):
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    if zero:
        with torch.no_grad():
            m[3].weight.zero_()
    return m


def export(m, path: Path, external: bool = False) -> ModelHandle:
    import onnx
    import torch

    torch.onnx.export(m, (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    if external:
        proto = onnx.load(str(path))
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=0)
    return ModelHandle(path=str(path), format="onnx", family="onnx", files=[str(path)],
                       inputs=IN, outputs=OUT, dim_defaults={"batch": 1})


N_PARAMS = 4 * 9 + 4 + 144 * 3 + 3  # conv w+b, linear w+b


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> ModelHandle:
    return export(tiny_cnn(), tmp_path_factory.mktemp("m") / "cnn.onnx")


# --------------------------------------------------------------------- size

def test_size_counts_external_data(tmp_path: Path):
    h = export(tiny_cnn(), tmp_path / "ext.onnx", external=True)
    data = tmp_path / "ext.onnx.data"
    assert data.is_file()
    rep = measure_size(h)  # handle lists only the .onnx file: the external file is found from the graph
    assert rep.bytes_on_disk == (tmp_path / "ext.onnx").stat().st_size + data.stat().st_size
    assert str(data.resolve()) in rep.files
    assert rep.param_count == N_PARAMS
    assert rep.bytes_by_dtype.get("float32", 0) >= N_PARAMS * 4
    assert rep.source == "onnx initializers"


def test_size_single_file_and_zip_of_sparse_weights(tmp_path: Path):
    dense = measure_size(export(tiny_cnn(), tmp_path / "d.onnx"))
    sparse = measure_size(export(tiny_cnn(zero=True), tmp_path / "s.onnx"))
    assert dense.param_count == sparse.param_count == N_PARAMS
    assert dense.bytes_on_disk == (tmp_path / "d.onnx").stat().st_size
    assert sparse.zip_bytes < dense.zip_bytes  # zeros compress: where unstructured sparsity pays
    assert measure_size(export(tiny_cnn(), tmp_path / "n.onnx"), compressed=False).zip_bytes is None


def test_zip_size_streams_like_one_shot(tmp_path: Path):
    p = tmp_path / "blob.bin"
    payload = np.random.default_rng(0).integers(0, 4, size=3 << 20, dtype=np.uint8).tobytes()
    p.write_bytes(payload)  # > 1 chunk
    q = tmp_path / "small.bin"
    q.write_bytes(b"abc" * 100)
    assert zip_size([p, q]) == len(zlib.compress(payload, 6)) + len(zlib.compress(b"abc" * 100, 6))


def test_size_of_torch_archive(tmp_path: Path):
    import torch.nn as nn

    from slimline.core.torchmodel import save_torch_module

    m = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).eval()
    h = save_torch_module(m, tmp_path / "m.safetensors", inputs=[TensorSpec(name="x", shape=["batch", 4])])
    rep = measure_size(h)
    assert rep.param_count == 4 * 3 + 3 + 3 + 3  # linear + BN affine; running stats are not parameters
    assert rep.bytes_by_dtype["float32"] == (21 + 6) * 4  # + running mean/var and rep.bytes_by_dtype["int64"] == 8
    assert rep.bytes_on_disk == (tmp_path / "m.safetensors").stat().st_size
    assert rep.source == "safetensors header"


# --------------------------------------------------------------------- latency

def counting_session(calls: list, out=None) -> Session:
    def runner(feeds):
        calls.append({k: v.copy() for k, v in feeds.items()})
        return [out if out is not None else np.zeros((feeds["input"].shape[0], 3), np.float32)]

    return Session(input_specs=IN, output_names=["logits"], provider="fake", device_name="test cpu",
                   threads=3, runner=runner)


def test_latency_honours_warmup_and_runs_with_random_inputs():
    calls: list = []
    rep = measure_latency(counting_session(calls), batch=4, runs=7, warmup=3)
    assert len(calls) == 10 and rep.runs == 7 and rep.warmup == 3
    assert rep.input_kind == "random" and "RANDOM" in rep.dataset
    assert rep.batch == 4 and rep.input_shapes == {"input": [4, 1, 8, 8]}
    assert rep.threads == 3 and rep.provider == "fake" and rep.device_name == "test cpu"
    assert {"numpy", "onnxruntime"} <= set(rep.versions)
    assert rep.min_ms <= rep.p50_ms <= rep.p90_ms <= rep.max_ms
    assert rep.spread == pytest.approx((rep.p90_ms - rep.p50_ms) / rep.p50_ms)
    assert rep.cpu_p50_ms is not None and rep.cores >= 1
    assert any("random inputs" in n for n in rep.notes)


def test_busy_machine_is_labelled():
    from slimline.core.metrics import latency_report

    s = counting_session([])
    feeds = {"input": np.zeros((1, 1, 8, 8), np.float32)}
    busy = latency_report(np.full(5, 0.002), session=s, feeds=feeds, batch=1, warmup=0,
                          input_kind="dataset", load_avg=1e3)
    assert busy.p50_ms == pytest.approx(2.0) and any("busy" in n for n in busy.notes)
    idle = latency_report(np.full(5, 0.002), session=s, feeds=feeds, batch=1, warmup=0,
                          input_kind="dataset", load_avg=0.0)
    assert idle.notes == [] and idle.spread == 0.0


def test_latency_uses_dataset_rows_tiled():
    calls: list = []
    x = np.arange(3 * 64, dtype=np.float64).reshape(3, 1, 8, 8)
    ds = Dataset(name="tiny.npz", source="tiny.npz", inputs={"input": x}, labels=np.array([0, 1, 2]))
    rep = measure_latency(counting_session(calls), batch=5, runs=2, warmup=0, dataset=ds)
    assert rep.input_kind == "dataset" and rep.dataset.startswith("tiny.npz")
    fed = calls[0]["input"]
    assert fed.dtype == np.float32 and fed.shape == (5, 1, 8, 8)
    np.testing.assert_array_equal(fed[:, 0, 0, 0], x[[0, 1, 2, 0, 1], 0, 0, 0])


def test_latency_rejects_bad_settings_and_data():
    with pytest.raises(DataError):
        measure_latency(counting_session([]), runs=0)
    bad = Dataset(name="b", source="b.npz", inputs={"input": np.zeros((2, 1, 7, 8), np.float32)})
    with pytest.raises(DataError, match="'input' expects shape"):
        measure_latency(counting_session([]), dataset=bad)


def test_latency_on_real_onnx_session(onnx_model):
    rep = measure_latency(onnx_model, batch=2, runs=5, warmup=2, threads=1)
    assert rep.provider == "CPUExecutionProvider" and rep.threads == 1 and rep.runs == 5
    assert rep.input_shapes == {"input": [2, 1, 8, 8]} and rep.p50_ms > 0
    assert rep.model_dump()["input_kind"] == "random"


# --------------------------------------------------------------------- accuracy / fidelity

def test_accuracy_math_on_known_logits():
    logits = np.array([[0.9, 0.1, 0.0], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], np.float32)
    s = counting_session([], out=logits)
    ds = Dataset(name="known.npz", source="known.npz", inputs={"input": np.zeros((4, 1, 8, 8), np.float32)},
                 labels=np.array([0, 1, 1, 2]))
    rep = accuracy(s, ds, batch_size=4)
    assert rep.top1 == 0.5 and rep.n == 4 and rep.dataset == "known.npz"


def test_accuracy_needs_labels(onnx_model):
    ds = Dataset(name="nolab.npz", source="nolab.npz", inputs={"input": np.zeros((2, 1, 8, 8), np.float32)})
    with pytest.raises(DataError) as exc:
        accuracy(onnx_model, ds)
    assert "no labels" in exc.value.message and exc.value.subject == "nolab.npz" and exc.value.hint


def test_accuracy_end_to_end_matches_torch(onnx_model):
    import torch

    x = np.random.default_rng(1).standard_normal((9, 1, 8, 8)).astype(np.float32)
    with torch.inference_mode():
        pred = tiny_cnn()(torch.from_numpy(x)).argmax(1).numpy()
    labels = pred.copy()
    labels[:3] = (labels[:3] + 1) % 3  # exactly 3 wrong
    rep = accuracy(onnx_model, Dataset(name="r", source="r", inputs={"input": x}, labels=labels), batch_size=4)
    assert rep.top1 == pytest.approx(6 / 9) and rep.n == 9


def test_fidelity_math():
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    same = fidelity([ref], [ref.copy()])
    assert same.mean_cosine == pytest.approx(1.0) and same.max_abs_error == 0 and same.top1_agreement == 1
    flipped = fidelity(ref, -ref)
    assert flipped.min_cosine == pytest.approx(-1.0)
    got = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 0.5]])
    f = fidelity([ref], [got])
    assert f.n == 2
    assert f.min_cosine == pytest.approx(1 / np.sqrt(2))
    assert f.mean_cosine == pytest.approx((1 / np.sqrt(2) + 2 / np.sqrt(4.25)) / 2)
    assert f.max_abs_error == pytest.approx(1.0)
    assert f.top1_agreement == 1.0  # argmax of [1,1,0] is 0 (first max)
    g = fidelity(ref, np.array([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]]))
    assert g.top1_agreement == 0.5
    zeros = fidelity(np.zeros((1, 3)), np.zeros((1, 3)))
    assert zeros.mean_cosine == 1.0
    with pytest.raises(DataError, match="shape"):
        fidelity(ref, ref[:1])


def test_environment_records_machine():
    env = environment()
    assert env["cpu"] and env["cores_logical"] >= 1 and env["python"].count(".") >= 1
    assert "numpy" in env["versions"]


def test_interleaved_timing_alternates_models_and_compares_the_second_with_the_first():
    from slimline.core.metrics import measure_interleaved

    order: list[str] = []

    def tagged(tag):
        def runner(feeds):
            order.append(tag)
            return [np.zeros((feeds["input"].shape[0], 3), np.float32)]
        return Session(input_specs=IN, output_names=["logits"], provider="fake", device_name="test cpu",
                       threads=1, runner=runner)

    a, b = measure_interleaved([tagged("a"), tagged("b")], runs=12, warmup=2, blocks=4, min_time_s=0.0)
    assert order[:4] == ["a", "a", "b", "b"]  # warm-up of each, then blocks
    blocks = order[4:]
    assert len(blocks) == 4 * 2 * (3 + 1)  # 4 blocks × 2 models × (1 untimed + 3 timed)
    firsts = [blocks[i] for i in range(0, len(blocks), 4)]
    assert firsts == ["a", "b", "b", "a", "a", "b", "b", "a"]  # A B, B A, …: neither model always goes first
    assert a.runs == b.runs == 12 and len(b.block_p50_ms) == 4 and a.vs_input is None
    assert b.vs_input is not None and b.vs_input.blocks == 4 and b.vs_input.runs_per_block == 3
    assert b.measured_at and a.measured_at == b.measured_at  # one session, one set of conditions
