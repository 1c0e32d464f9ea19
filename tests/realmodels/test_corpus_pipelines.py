"""Every corpus model × each quantize preset runs through the engine and ends clearly: done, or a refusal with a
message and a hint that names no Python exception type — never a traceback. Weights-only files are refused with
"cannot run". The same cases as ``python -m tests.realmodels.sweep`` (which prints the per-step tables).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .fetch import model_path
from .manifest import MODELS
from .sweep import EXC_NAME, cases_for, run_case

CASES = [pytest.param(m, preset, id=f"{m.id}-{preset.replace('builtin.', '')}", marks=pytest.mark.real(m.id))
         for m in MODELS for preset in cases_for(m)]


@pytest.mark.parametrize(("model", "preset"), CASES)
def test_preset_finishes_or_refuses_clearly(model, preset, tmp_path: Path) -> None:
    case = run_case(model, preset, tmp_path)
    assert case.status != "CRASH", f"{model.id} × {preset} crashed:\n{case.details}"
    assert case.ok, f"{model.id} × {preset}: {case.status}: {case.message!r} (hint {case.hint!r})"
    if model.exporter in ("state_dict", "safetensors"):
        assert case.status in ("cannot run", "refused") and case.message
    if case.status == "done":
        assert case.table and "original" in case.table.lower()
        if preset != "(open)":  # "(open)" only measures the original: no step, no size ratio
            assert case.size_ratio is not None and case.size_ratio > 0
    else:
        assert not EXC_NAME.search(case.message), case.message


def test_dynamic_int8_on_a_conv_net_points_at_static() -> None:
    m = next(x for x in MODELS if x.id == "rapidocr-cls-v2")
    if not model_path(m).exists():
        pytest.skip("rapidocr-cls-v2 is not cached; run `make realmodels`")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        case = run_case(m, "builtin.quantize_dynamic", Path(tmp))
    assert case.status == "refused", case.status
    assert "nothing was quantized" in case.message and "static INT8" in case.hint


@pytest.mark.real("silero-vad-onnx")
def test_cli_run_silero_prints_table_without_traceback(tmp_path: Path) -> None:
    """The CLI path: a scalar `sr` input and a [2, batch, 128] state run whole-per-batch; no traceback."""
    m = next(x for x in MODELS if x.id == "silero-vad-onnx")
    pipe = tmp_path / "p.json"
    pipe.write_text('{"format": "slimline.pipeline", "schema_version": 1, "name": "fp16", "steps": '
                    '[{"id": "q", "plugin": "builtin.quantize_static", "params": {}}], "evaluation": '
                    '{"latency": {"batch_sizes": [1], "runs": 3, "warmup": 1}}}')
    import numpy as np

    from slimline.core.data import random_dataset
    from slimline.core.models import open_model

    ds = random_dataset(open_model(str(model_path(m))).with_dims(input_dim1=512), 8)
    assert ds.inputs["sr"].ndim == 0 and int(ds.inputs["sr"]) == 16000
    assert ds.inputs["state"].shape == (2, 8, 128)
    np.savez(tmp_path / "d.npz", **ds.inputs)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "slimline.core.cli", "run", str(pipe), str(model_path(m)),
                           "--data", str(tmp_path / "d.npz"), "--workspace", str(tmp_path / "ws"),
                           "--dim", "input_dim1=512"], capture_output=True, text=True, timeout=600, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "Original" in proc.stdout or "original" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    if proc.returncode:
        assert "error:" in proc.stderr and "→" in proc.stderr
        assert not EXC_NAME.search(proc.stderr.split("error:", 1)[1]), proc.stderr[-2000:]


@pytest.mark.real("smollm2-135m-q4_1")
def test_inspect_gguf_opens() -> None:
    """`slimline inspect` of a GGUF file: exit 0, the dequantized model's parameters, no traceback."""
    from .sweep import inspect_summary

    m = next(x for x in MODELS if x.id == "smollm2-135m-q4_1")
    if not model_path(m).exists():
        pytest.skip("smollm2-135m-q4_1 is not cached; run `make realmodels`")
    ok, line = inspect_summary(m)
    assert ok and line.startswith("rc=0") and "134,515,008" in line, line
