"""Export formats: each written file is loaded back with its runtime and checked against the source."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slimline.core.errors import Cancelled
from slimline.core.export.formats import export_model
from slimline.core.export.records import ExportError, ParityError, sha256_file
from slimline.core.export.staging import STAGING_PREFIX
from slimline.core.models import open_model
from slimline.core.plugin import CancelToken


def _torch_predict(mlp):
    from slimline.core.data import load_dataset
    from slimline.core.runtime import predict

    path, data = mlp
    h = open_model(path)
    return predict(h, load_dataset(data, h))[0]


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*")] if folder.exists() else []


def test_torch_to_onnx_is_verified_and_matches_torch(mlp, mlp_onnx):
    import onnxruntime as ort

    path, rec = mlp_onnx
    p = rec.parity
    assert rec.format == "onnx" and path.is_file() and rec.sha256 == sha256_file(path)
    assert p.passed and p.precision == "fp32" and p.runtime == "onnxruntime"
    assert p.input_kind == "dataset" and p.n == 70
    assert p.max_abs_error < 1e-4 and p.mean_cosine > 0.99999 and p.top1_agreement == 1.0
    # independent check, outside the export code: onnxruntime output equals torch output
    x = np.load(mlp[1])["x"]
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(got - _torch_predict(mlp)).max() < 1e-4


def test_onnx_variant_is_copied_byte_for_byte(mlp, mlp_onnx, tmp_path):
    src, _ = mlp_onnx
    rec = export_model(open_model(src), "onnx", tmp_path, data=mlp[1], name="copy")
    assert rec.sha256 == sha256_file(src)
    assert rec.parity.max_abs_error == 0.0
    assert rec.parity.tolerance.max_abs_rel == 1e-4  # byte-identical: the strict "copy" tolerance


def test_external_data_layout(mlp, mlp_onnx, tmp_path):
    import onnx
    import onnxruntime as ort

    rec = export_model(open_model(mlp_onnx[0]), "onnx", tmp_path, data=mlp[1], name="big", external_data=True)
    names = sorted(Path(f.path).name for f in rec.files)
    assert names == ["big.data", "big.onnx"] and rec.external_data
    model = onnx.load(str(tmp_path / "big.onnx"), load_external_data=False)
    locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"big.data"}
    # every tensor over 1 kB moved out; the graph file shrank by what the data file holds
    moved = [t for t in onnx.load(str(mlp_onnx[0])).graph.initializer if len(t.raw_data) > 1024]
    assert moved and (tmp_path / "big.data").stat().st_size == sum(len(t.raw_data) for t in moved)
    assert (tmp_path / "big.onnx").stat().st_size < mlp_onnx[0].stat().st_size - 1024
    x = np.load(mlp[1])["x"]
    got = ort.InferenceSession(str(tmp_path / "big.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(got - _torch_predict(mlp)).max() < 1e-4
    assert open_model(tmp_path / "big.onnx").bytes_on_disk >= (tmp_path / "big.data").stat().st_size


@pytest.mark.parametrize("fmt,suffix,runtime", [("torchscript", ".pt", "torch.jit.load"),
                                                ("pt2", ".pt2", "torch.export.load")])
def test_torch_formats_load_back(mlp, tmp_path, fmt, suffix, runtime):
    import torch

    path, data = mlp
    rec = export_model(open_model(path), fmt, tmp_path, data=data)
    out = Path(rec.path)
    assert out.name == "mlp" + suffix and rec.parity.runtime == runtime and rec.parity.passed
    assert rec.parity.max_abs_error < 1e-5
    x = torch.from_numpy(np.load(data)["x"][:7])  # a batch size never seen while exporting
    module = torch.jit.load(str(out)) if fmt == "torchscript" else torch.export.load(str(out)).module()
    with torch.no_grad():
        got = module(x).numpy()
    assert np.abs(got - _torch_predict(mlp)[:7]).max() < 1e-5


def test_safetensors_of_torch_variant_reloads_into_architecture(mlp, tmp_path):
    from safetensors.numpy import load_file

    path, data = mlp
    rec = export_model(open_model(path), "safetensors", tmp_path, data=data)
    assert rec.parity.kind == "outputs" and rec.parity.max_abs_error < 1e-6
    tensors = load_file(rec.path)
    assert set(tensors) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_safetensors_of_onnx_variant_is_bit_exact(mlp, mlp_onnx, tmp_path):
    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import load_file

    rec = export_model(open_model(mlp_onnx[0]), "safetensors", tmp_path, data=mlp[1])
    assert rec.parity.kind == "weights" and rec.parity.max_abs_error == 0.0
    inits = onnx.load(str(mlp_onnx[0])).graph.initializer
    got = load_file(rec.path)
    assert rec.parity.n == len(inits) == len(got)
    for t in inits:
        assert np.array_equal(got[t.name], numpy_helper.to_array(t))


def test_random_inputs_when_no_data(mlp, tmp_path):
    rec = export_model(open_model(mlp[0]), "torchscript", tmp_path)
    assert rec.parity.input_kind == "random" and rec.parity.passed


def test_existing_file_needs_force(mlp, tmp_path):
    h = open_model(mlp[0])
    first = export_model(h, "torchscript", tmp_path, data=mlp[1])
    before = sha256_file(first.path)
    (tmp_path / "mlp.pt").write_bytes(b"user's own file")
    with pytest.raises(ExportError, match="already exist") as exc:
        export_model(h, "torchscript", tmp_path, data=mlp[1])
    assert "--force" in exc.value.hint
    assert (tmp_path / "mlp.pt").read_bytes() == b"user's own file"
    again = export_model(h, "torchscript", tmp_path, data=mlp[1], force=True)
    assert sha256_file(again.path) == before


def test_failed_parity_raises_and_leaves_nothing(mlp, mlp_onnx, tmp_path, monkeypatch):
    from slimline.core.export import parity

    real = parity.ort_runner

    def broken(path, specs):
        run = real(path, specs)
        return lambda feeds: [o + 0.5 for o in run(feeds)]  # a subtly wrong runtime result

    monkeypatch.setattr(parity, "ort_runner", broken)
    out = tmp_path / "out"
    with pytest.raises(ParityError, match="max abs error") as exc:
        export_model(open_model(mlp_onnx[0]), "onnx", out, data=mlp[1])
    assert "not written" in exc.value.hint
    assert _leftovers(out) == []


def test_cancel_mid_export_leaves_nothing(mlp, tmp_path):
    token = CancelToken()
    seen = []

    def progress(fraction, message):
        seen.append(message)
        if message.startswith("loading the written file back"):  # the file exists in staging now
            token.cancel()

    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        export_model(open_model(mlp[0]), "pt2", out, data=mlp[1], cancel=token, progress=progress)
    assert any(m.startswith("writing") for m in seen)
    assert _leftovers(out) == []
    assert not any(p.name.startswith(STAGING_PREFIX) for p in tmp_path.rglob("*"))


def test_torch_formats_refused_for_onnx_variant(mlp_onnx, tmp_path):
    with pytest.raises(ExportError) as exc:
        export_model(open_model(mlp_onnx[0]), "torchscript", tmp_path)
    assert "--step" in exc.value.hint
    assert list(tmp_path.iterdir()) == []


def test_unknown_format(mlp, tmp_path):
    with pytest.raises(ExportError, match="unknown export format") as exc:
        export_model(open_model(mlp[0]), "tflite", tmp_path)
    assert exc.value.subject == "--format"
