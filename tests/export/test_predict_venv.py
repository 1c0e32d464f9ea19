"""The bundle's predict.py in a brand-new virtual environment holding only requirements.txt.

Slow (creates a venv and installs numpy + onnxruntime from the package index), so it runs
with `make installer-test`. A plain venv, not --system-site-packages: nothing of this
environment leaks in.
"""
from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from slimline.core.export.bundle import export_bundle
from slimline.core.export.variants import resolve_variant


@pytest.mark.slow
def test_predict_in_fresh_venv_matches_app(tmp_path):
    from slimline.core.data import load_dataset
    from slimline.core.demo import demo_paths
    from slimline.core.models import open_model
    from slimline.core.runtime import predict

    paths = demo_paths()
    model, data = Path(paths["torch"]), Path(paths["eval"])
    variant = resolve_variant(model)
    rec = export_bundle(variant, tmp_path / "bundle", data=data)      # torch demo → ONNX bundle
    bundle = Path(rec.bundle_dir)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    py = env_dir / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(bundle / "requirements.txt")],
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-2000:]
    freeze = subprocess.run([str(py), "-m", "pip", "freeze"], capture_output=True, text=True).stdout.lower()
    assert "torch" not in freeze and "slimline" not in freeze   # really only the listed requirements
    proc = subprocess.run([str(py), "-I", str(bundle / "predict.py"), str(data)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = [int(line.split("\t")[1]) for line in proc.stdout.splitlines()]
    h = open_model(bundle / Path(rec.model_export.path).name)
    app = predict(h, load_dataset(data, h))[0].argmax(-1).tolist()
    assert len(printed) == 449 and printed == app
    # and the app's torch model agrees (the bundle's ONNX is a faithful export)
    torch_h = open_model(model)
    torch_pred = predict(torch_h, load_dataset(data, torch_h))[0].argmax(-1).tolist()
    assert sum(a == b for a, b in zip(printed, torch_pred)) / 449 >= 0.99
    print(f"\nfresh venv: {freeze.strip().replace(chr(10), ', ')}; {proc.stderr.strip()}", file=sys.stderr)
