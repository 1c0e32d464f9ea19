"""Sessions over onnxruntime and torch: outputs, dtypes, threads, caching, predict."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from slimline.core.data import Dataset
from slimline.core.errors import DataError, ModelLoadError
from slimline.core.handle import Capabilities, ModelHandle, TensorSpec
from slimline.core.runtime import Session, clear_session_cache, cpu_name, open_session, predict

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

IN = [TensorSpec(name="input", dtype="float32", shape=["batch", 1, 8, 8])]
OUT = [TensorSpec(name="logits", dtype="float32", shape=["batch", 3])]


def tiny_cnn():
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    import torch

    from slimline.core.torchmodel import save_torch_module

    d = tmp_path_factory.mktemp("rt")
    m = tiny_cnn()
    onnx_path = d / "cnn.onnx"
    torch.onnx.export(m, (torch.zeros(2, 1, 8, 8),), str(onnx_path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    onnx_h = ModelHandle(path=str(onnx_path), format="onnx", family="onnx", files=[str(onnx_path)],
                         inputs=IN, outputs=OUT, dim_defaults={"batch": 1})
    torch_h = save_torch_module(m, d / "cnn.safetensors", inputs=IN, outputs=OUT)
    x = np.random.default_rng(0).standard_normal((7, 1, 8, 8)).astype(np.float32)
    with torch.inference_mode():
        ref = m(torch.from_numpy(x)).numpy()
    return {"onnx": onnx_h, "torch": torch_h, "x": x, "ref": ref, "dir": d}


def test_onnx_session_runs_and_records_environment(models):
    s = open_session(models["onnx"], threads=1)
    assert s.provider == "CPUExecutionProvider" and s.threads == 1
    assert s.input_names == ["input"] and s.output_names == ["logits"]
    assert s.device_name == cpu_name() and s.device_name
    out = s.run({"input": models["x"].astype(np.float64)})  # cast to the declared float32
    np.testing.assert_allclose(out[0], models["ref"], atol=1e-5)
    assert open_session(models["onnx"], threads=0).threads == os.cpu_count()


def test_torch_session_matches_and_restores_threads(models):
    import torch

    before = torch.get_num_threads()
    try:
        s = open_session(models["torch"], threads=1)
        assert s.provider == "torch-cpu" and s.threads == 1
        torch.set_num_threads(max(before, 2))
        out = s.run({"input": models["x"]})
        assert torch.get_num_threads() == 1  # the session pins its own thread count
        np.testing.assert_allclose(out[0], models["ref"], atol=1e-5)
    finally:
        torch.set_num_threads(before)


def test_missing_input_names_it(models):
    s = open_session(models["onnx"], threads=1)
    with pytest.raises(DataError) as exc:
        s.run({"image": models["x"]})
    assert "'input'" in exc.value.message and "image" in exc.value.message


def test_session_cache_keys_on_mtime_and_threads(models, tmp_path: Path):
    import shutil

    p = tmp_path / "c.onnx"
    shutil.copy(models["onnx"].path, p)
    h = models["onnx"].model_copy(update={"path": str(p), "files": [str(p)]})
    a = open_session(h, threads=1)
    assert open_session(h, threads=1) is a
    assert open_session(h, threads=2) is not a
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert open_session(h, threads=1) is not a
    clear_session_cache()
    assert open_session(h, threads=1) is not a


def test_torch_sessions_are_reused_until_the_file_changes(models, tmp_path: Path):
    import shutil

    from slimline.core.torchmodel import handle_for_archive

    p = tmp_path / "t.safetensors"
    shutil.copy(models["torch"].path, p)
    h = handle_for_archive(p)
    a = open_session(h, threads=1)
    assert open_session(h, threads=1) is a
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert open_session(h, threads=1) is not a


def test_predict_concatenates_over_uneven_batches(models):
    ds = Dataset(name="x", source="x", inputs={"input": models["x"]})
    for key in ("onnx", "torch"):
        out = predict(models[key], ds, batch_size=3, threads=1)
        assert len(out) == 1 and out[0].shape == (7, 3)
        np.testing.assert_allclose(out[0], models["ref"], atol=1e-5)
    sess = open_session(models["onnx"], threads=1)
    seen = []
    predict(sess, ds, batch_size=4, progress=lambda f, m: seen.append(f))
    assert seen == [4 / 7, 1.0]


def test_predict_checks_dataset_shape(models):
    bad = Dataset(name="bad", source="bad.npz", inputs={"input": np.zeros((2, 1, 9, 8), np.float32)})
    with pytest.raises(DataError, match="'input' expects shape"):
        predict(models["onnx"], bad)


def test_unrunnable_and_bad_device(models, tmp_path: Path):
    w = ModelHandle(path=str(tmp_path / "w.safetensors"), format="safetensors", family="weights",
                    capabilities=Capabilities(run=False, compress=False, reason="weights only"))
    with pytest.raises(ModelLoadError, match="weights only"):
        open_session(w)
    with pytest.raises(ModelLoadError, match="device"):
        open_session(models["onnx"], device="tpu")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(ModelLoadError) as exc:
        open_session(ModelHandle(path=str(broken), format="onnx", family="onnx"))
    assert str(broken) in exc.value.subject


def test_integer_inputs_are_cast_for_onnx(tmp_path: Path):
    import torch
    import torch.nn as nn

    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(20, 4)

        def forward(self, ids):
            return self.emb(ids).mean(dim=1)

    p = tmp_path / "bag.onnx"
    torch.onnx.export(Bag().eval(), (torch.zeros(2, 5, dtype=torch.long),), str(p), dynamo=False,
                      opset_version=17, input_names=["ids"], output_names=["out"],
                      dynamic_axes={"ids": {0: "batch", 1: "seq"}})
    h = ModelHandle(path=str(p), format="onnx", family="onnx", files=[str(p)],
                    inputs=[TensorSpec(name="ids", dtype="int64", shape=["batch", "seq"])])
    s = open_session(h, threads=1)
    assert s.input_specs[0].dtype == "int64"
    out = s.run({"ids": np.array([[1, 2, 3]], dtype=np.int32)})
    assert out[0].shape == (1, 4)


def test_fake_session_predict():
    calls = []

    def runner(feeds):
        calls.append(feeds["x"].shape[0])
        return [feeds["x"] * 2, feeds["x"].sum(axis=1)]

    s = Session(input_specs=[TensorSpec(name="x", shape=["batch", 2])], output_names=["a", "b"],
                provider="fake", device_name="none", threads=1, runner=runner)
    ds = Dataset(name="d", source="d", inputs={"x": np.arange(10, dtype=np.float32).reshape(5, 2)})
    a, b = predict(s, ds, batch_size=2)
    assert calls == [2, 2, 1]
    np.testing.assert_array_equal(a, ds.inputs["x"] * 2)
    np.testing.assert_array_equal(b, [1, 5, 9, 13, 17])
