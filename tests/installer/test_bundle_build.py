"""Build the PyInstaller one-folder bundle and smoke-test it headless (slow: minutes).

Runs with `make installer-test`. Set SLIMLINE_PREBUILT_BUNDLE=dist/slimline to test a
bundle `make installer` already built instead of building again.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = {"builtin.convert_onnx", "builtin.quantize_dynamic", "builtin.quantize_static", "builtin.quantize_fp16",
           "builtin.prune_magnitude", "builtin.prune_structured", "builtin.lowrank", "builtin.distill"}


def _headless_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/bin:/bin"                      # no venv on PATH: the bundle must stand alone
    env["SLIMLINE_WORKSPACE"] = str(tmp / "ws")
    env["HOME"] = str(tmp / "home")
    return env


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    pre = os.environ.get("SLIMLINE_PREBUILT_BUNDLE")
    if pre:
        return Path(pre).resolve()
    dist = tmp_path_factory.mktemp("dist")
    t0 = time.time()
    proc = subprocess.run(["bash", "installers/build_bundle.sh"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "DIST": str(dist)}, timeout=3000)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(f"\nbundle built in {time.time() - t0:.0f} s: {proc.stdout.strip().splitlines()[-2]}")
    return dist / "slimline"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_bundle_runs_cli_headless(bundle, tmp_path):
    exe = bundle / "slimline"
    assert exe.is_file() and os.access(exe, os.X_OK)
    assert (bundle / "slimline.desktop").is_file() and (bundle / "slimline.png").is_file()
    env = _headless_env(tmp_path)

    def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=timeout,
                              cwd=tmp_path)

    v = run("--version")
    assert v.returncode == 0 and v.stdout.strip() == "slimline 0.1.0", v.stderr
    pl = run("plugins", "--json")
    assert pl.returncode == 0, pl.stderr
    found = {p["id"]: p for p in json.loads(pl.stdout)}
    assert PLUGINS <= set(found) and not [p for p in found.values() if "error" in p]
    from slimline.core.demo import demo_paths

    demo = demo_paths()["torch"]
    ins = run("inspect", str(demo), "--limit", "3")
    assert ins.returncode == 0, ins.stderr
    assert "767,722" in ins.stdout or "767722" in ins.stdout
    # the torch.export-based ONNX exporter needs onnxscript's sources inside the bundle
    exp = run("export", str(demo), "--format", "onnx", "--out", str(tmp_path / "onnx"), "--json", timeout=600)
    assert exp.returncode == 0, exp.stderr[-3000:]
    rec = json.loads(exp.stdout)
    assert rec["parity"]["passed"] and rec["parity"]["input_kind"] == "random"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_bundle_starts_gui_offscreen(bundle, tmp_path):
    env = {**_headless_env(tmp_path), "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.Popen([str(bundle / "slimline"), "--demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)
    try:
        time.sleep(25)
        alive = proc.poll() is None
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert alive, f"the GUI exited early (rc {proc.returncode}): {err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
