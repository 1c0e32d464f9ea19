"""Deployment bundle: contents, checksums, model card facts, predict.py output, zip, Triton, safety."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pbtxt import parse_pbtxt  # tests/export/pbtxt.py

from slimline.core.errors import Cancelled
from slimline.core.export.bundle import export_bundle
from slimline.core.export.records import ExportError
from slimline.core.export.variants import resolve_variant
from slimline.core.plugin import CancelToken


def _app_predictions(model_path: Path, data: Path) -> list[int]:
    from slimline.core.data import load_dataset
    from slimline.core.models import open_model
    from slimline.core.runtime import predict

    h = open_model(model_path)
    return predict(h, load_dataset(data, h))[0].argmax(-1).tolist()


@pytest.fixture
def bundle(fake_run, tmp_path):
    variant = resolve_variant(fake_run)
    rec = export_bundle(variant, tmp_path / "deploy" / "mlp-bundle", data=variant.data_path, name=variant.name,
                        zip_bundle=True, triton=True, max_batch_size=16)
    return rec, Path(rec.bundle_dir), variant


def test_bundle_files_and_checksums(bundle):
    rec, d, _ = bundle
    names = sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())
    assert names == sorted(["MODEL_CARD.md", "SHA256SUMS", "model_card.json", "pipeline.json", "predict.py",
                            "requirements.txt", "mlp-s1.onnx", "triton/mlp-s1/config.pbtxt",
                            "triton/mlp-s1/1/model.onnx"])
    sums = dict(reversed(line.split("  ", 1)) for line in (d / "SHA256SUMS").read_text().splitlines())
    assert sorted(sums) == sorted(n for n in names if n != "SHA256SUMS")
    for name, digest in sums.items():
        assert hashlib.sha256((d / name).read_bytes()).hexdigest() == digest
    reqs = (d / "requirements.txt").read_text().split()
    assert [r.split("==")[0] for r in reqs] == ["numpy", "onnxruntime"] and all("==" in r for r in reqs)
    assert rec.predict_check["ran"] and rec.predict_check["matches_app"]
    assert not any(p.name.startswith(".") for p in d.parent.iterdir())  # no staging leftovers


def test_model_card_facts(bundle, mlp):
    rec, d, variant = bundle
    card = json.loads((d / "model_card.json").read_text())
    src_path, _ = mlp
    assert card["source"]["sha256"] == hashlib.sha256(src_path.read_bytes()).hexdigest()
    assert card["source"]["run_id"] == variant.run.run_id and card["source"]["step_id"] == "s1"
    assert card["model"]["sha256"] == hashlib.sha256((d / "mlp-s1.onnx").read_bytes()).hexdigest()
    assert card["pipeline"]["sha256"] == hashlib.sha256((d / "pipeline.json").read_bytes()).hexdigest()
    assert [s["step_id"] for s in card["steps"]] == ["original", "s1"]
    assert card["steps"][1]["latency"]["64"]["p90_ms"] > card["steps"][1]["latency"]["64"]["p50_ms"]
    assert card["measured_on"]["cpu"] == "test CPU"
    assert card["inputs"][0]["name"] == "x" and card["inputs"][0]["dynamic_dims"]
    assert card["parity"]["passed"] and card["parity"]["n"] == 70
    assert any("standardised features" in n for n in card["preprocessing"]["notes"])
    assert "onnxruntime" in card["libraries"]
    md = (d / "MODEL_CARD.md").read_text()
    for fact in (card["source"]["sha256"], card["model"]["sha256"], "bigger on disk: test warning",
                 "Parity of this file", "predict.py"):
        assert fact in md


def test_predict_py_prints_the_apps_predictions(bundle, mlp):
    _, d, _ = bundle
    data = mlp[1]
    proc = subprocess.run([sys.executable, str(d / "predict.py"), str(data)], capture_output=True, text=True,
                          timeout=120, cwd=d.parent)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [int(r[0]) for r in rows] == list(range(70))
    preds = [int(r[1]) for r in rows]
    assert preds == _app_predictions(d / "mlp-s1.onnx", data)
    labels = np.load(data)["labels"]
    assert f"top-1 accuracy {np.mean(np.asarray(preds) == labels):.4f} on 70 rows" in proc.stderr


def test_zip_holds_the_folder(bundle):
    rec, d, _ = bundle
    with zipfile.ZipFile(rec.zip_path) as zf:
        names = sorted(zf.namelist())
        assert names == sorted(f"mlp-bundle/{p.relative_to(d).as_posix()}" for p in d.rglob("*") if p.is_file())
        assert zf.read("mlp-bundle/mlp-s1.onnx") == (d / "mlp-s1.onnx").read_bytes()


def test_triton_config_matches_model(bundle):
    _, d, _ = bundle
    cfg = parse_pbtxt((d / "triton" / "mlp-s1" / "config.pbtxt").read_text())
    assert cfg["max_batch_size"] == 16
    assert cfg["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [16]}]
    assert cfg["output"] == [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}]


def test_existing_bundle_needs_force_and_cancel_leaves_nothing(bundle, fake_run):
    rec, d, variant = bundle
    with pytest.raises(ExportError, match="not empty"):
        export_bundle(variant, d, data=variant.data_path)
    token = CancelToken()

    def progress(fraction, message):
        if "model card" in message:
            token.cancel()

    fresh = d.parent / "other"
    with pytest.raises(Cancelled):
        export_bundle(variant, fresh, data=variant.data_path, cancel=token, progress=progress, zip_bundle=True)
    assert not fresh.exists() and not fresh.with_name("other.zip").exists()
    assert sorted(p.name for p in d.parent.iterdir()) == ["mlp-bundle", "mlp-bundle.zip"]
    again = export_bundle(variant, d, data=variant.data_path, force=True)
    assert again.model_export.sha256 == rec.model_export.sha256
