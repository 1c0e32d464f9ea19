"""`slimline run PIPE MODEL --data TEXT` on a language model: the LM columns, then `slimline report`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.lm.helpers import SMALL

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "slimline.core.cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)


def test_cli_run_of_a_one_step_pipeline_shows_the_lm_columns_and_the_report_the_generations(
        tiny_lm: Path, tiny_text: Path, tmp_path: Path) -> None:
    pipe = tmp_path / "lm.json"
    pipe.write_text(json.dumps({"format": "slimline.pipeline", "schema_version": 1, "name": "lm",
                                "steps": [{"id": "s1", "plugin": "builtin.prune_magnitude",
                                           "params": {"sparsity": 0.5}}],
                                "evaluation": {"lm": SMALL}}), encoding="utf-8")
    ws = tmp_path / "ws"
    out = _cli("run", str(pipe), str(tiny_lm), "--data", str(tiny_text), "--workspace", str(ws), "--threads", "1",
               "--out", str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    header = next(ln for ln in text.splitlines() if ln.startswith("step "))
    for col in ("perplexity", "Δ ppl (95 % CI)", "agreement", "KL ≥", "decode tok/s", "prefill ms", "same gen",
                "peak RSS"):
        assert col in header, col
    s1 = next(ln for ln in text.splitlines() if ln.startswith("s1: "))
    assert " ±" in s1 and " %" in s1
    assert "llama-corpus.txt: 6 windows × 32 tokens, BOS prepended, 192 tokens scored" in text
    assert "1 thread" in text and "generate (KV cache)" in text and "KL ≥ = KL(original ‖ step)" in text
    assert "perplexity" in (tmp_path / "out" / "results.md").read_text(encoding="utf-8")
    rep = _cli("report", "latest", "--workspace", str(ws), "--out", str(tmp_path / "r.html"), "--no-stats")
    assert rep.returncode == 0, rep.stderr
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Results per step (language model)" in html and "Generations side by side" in html
    assert "Perplexity with 95 % interval" in html and "Decode speed" in html
    assert html.count("<h3>Prompt ") == 4


def test_cli_names_the_text_file_shorter_than_one_window(tiny_lm: Path, tmp_path: Path) -> None:
    pipe = tmp_path / "lm.json"
    pipe.write_text(json.dumps({"format": "slimline.pipeline", "schema_version": 1, "steps": []}), encoding="utf-8")
    short = tmp_path / "short.txt"
    short.write_text("A few words only.", encoding="utf-8")
    out = _cli("run", str(pipe), str(tiny_lm), "--data", str(short), "--workspace", str(tmp_path / "ws"))
    assert out.returncode == 1
    assert f"error: {short}: the text has" in out.stderr and "shorter than one window of 128" in out.stderr
    assert "Traceback" not in out.stderr
