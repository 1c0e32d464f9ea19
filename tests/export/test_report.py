"""HTML report: self-contained (no scripts, no network), with the run's facts and charts."""
from __future__ import annotations

import json
import re

from slimline.core.cli import main
from slimline.core.export.report import append_export_record, load_export_records, wilson, write_report


def test_wilson_interval():
    lo, hi = wilson(0.9, 100)
    assert 0.82 < lo < 0.83 and 0.94 < hi < 0.95
    assert wilson(1.0, 449)[1] == 1.0 and wilson(1.0, 449)[0] > 0.99


def test_report_is_self_contained_and_complete(fake_run, tmp_path):
    record = json.loads((fake_run / "run.json").read_text())
    append_export_record(fake_run, {"format": "onnx", "name": "m", "path": "/x/m.onnx", "bytes": 123,
                                    "sha256": "ab" * 32, "source": {"step_id": "s1"},
                                    "parity": {"kind": "outputs", "precision": "fp32", "runtime": "onnxruntime",
                                               "n": 70, "max_abs_error": 1e-6, "max_abs_allowed": 1e-3,
                                               "mean_cosine": 1.0, "top1_agreement": 1.0,
                                               "input_kind": "dataset"}})
    out = write_report(record, tmp_path / "r.html", exports=load_export_records(fake_run))
    html = out.read_text()
    assert "<script" not in html.lower()
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", html)
    assert html.count("<svg") >= 4                 # size, latency b1, latency b64, accuracy
    for fact in (record["run_id"], "test pipeline", "builtin.convert_onnx", "Convert to ONNX",
                 "bigger on disk: test warning", "Original model:", "Final model:", "0.weight",
                 "/x/m.onnx", "fp32, onnxruntime", "test CPU"):
        assert fact in html, fact
    lo, hi = wilson(0.93, 70)
    assert f"0.9300 ({lo:.3f}–{hi:.3f})" in html     # accuracy shown with its spread
    assert "0.040 / 0.048" in html or "p50 / p90" in html


def test_report_cli_writes_and_refuses_overwrite(fake_run, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", str(fake_run), "--out", str(out), "--no-stats"]) == 0
    assert out.is_file() and "Per-layer statistics" in out.read_text()
    assert main(["report", str(fake_run), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["report", "no-such-run", "--workspace", str(tmp_path)]) == 2
