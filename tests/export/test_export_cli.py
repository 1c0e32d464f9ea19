"""`slimline export` on a run folder: final model by default, --step, errors, --json, exports.json."""
from __future__ import annotations

import json

from slimline.core.cli import main
from slimline.core.export.report import load_export_records


def test_export_final_variant_and_record(fake_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(fake_run), "--format", "onnx", "--out", str(out), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["path"] == str(out / "mlp-s1.onnx") and rec["parity"]["passed"]
    assert rec["source"]["step_id"] == "s1" and rec["source"]["run_id"] == fake_run.name
    assert load_export_records(fake_run)[-1]["sha256"] == rec["sha256"]
    assert main(["export", str(fake_run), "--format", "onnx", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


def test_export_step_and_errors(fake_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(fake_run), "--step", "original", "--format", "torchscript", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mlp.pt" in text and "parity" in text and "torch.jit.load" in text
    assert main(["export", str(fake_run), "--step", "s9", "--format", "onnx", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no step 's9'" in err and "original, s1" in err
    assert main(["export", str(fake_run), "--format", "torchscript", "--out", str(out)]) == 2
    assert "--step" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing"), "--format", "onnx", "--out", str(out)]) == 2


def test_engine_entry_point_for_the_gui(fake_run, tmp_path):
    from slimline.core.export import export_variant, formats_for
    from slimline.core.export.variants import resolve_variant

    assert formats_for("onnx") == ["onnx", "safetensors", "bundle"] and "pt2" in formats_for("torch")
    v = resolve_variant(fake_run)
    rec = export_variant(v.handle, "bundle", tmp_path / "b", data=v.data_path)
    assert (tmp_path / "b" / "predict.py").is_file() and rec.model_export.parity.passed
    rec2 = export_variant(v.handle, "onnx", tmp_path / "o", data=v.data_path)
    assert rec2.parity.passed and rec2.format == "onnx"
