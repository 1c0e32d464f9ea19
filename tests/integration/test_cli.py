"""The headless CLI over the engine: inspect, bench, run, plugins, errors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from slimline.core.cli import main
from slimline.core.results import Fidelity


def test_inspect_json_on_archive(tiny_torch_model, capsys):
    model, _ = tiny_torch_model
    assert main(["inspect", str(model), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"]["format"] == "slimline_torch"
    names = {row["name"] for row in doc["layers"]}
    assert {"0.weight", "2.weight"} <= names
    w0 = next(r for r in doc["layers"] if r["name"] == "0.weight")
    assert w0["shape"] == [32, 16] and w0["params"] == 512 and w0["std"] > 0


def test_inspect_text_on_demo(capsys):
    from slimline.core.demo import demo_paths

    assert main(["inspect", str(demo_paths()["torch"])]) == 0
    out = capsys.readouterr().out
    assert "767,722" in out and "input: float32 [batch, 1, 32, 32]" in out


def test_bad_model_exits_2_with_message(tmp_path, capsys):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x00garbage" * 10)
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "broken.onnx" in err and "Traceback" not in err


def test_bench_labels_random_inputs(tiny_torch_model, capsys):
    model, data = tiny_torch_model
    assert main(["bench", str(model), "--runs", "5", "--warmup", "2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["latency"][0]["input_kind"] == "random" and doc["accuracy"] is None
    assert main(["bench", str(model), "--runs", "5", "--warmup", "2", "--data", str(data), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["latency"][0]["input_kind"] == "dataset" and doc["accuracy"]["n"] == 40


def test_run_prints_table_and_writes_out(tiny_torch_model, tmp_path, capsys):
    model, data = tiny_torch_model
    pipe = tmp_path / "p.json"
    pipe.write_text(json.dumps({"format": "slimline.pipeline", "schema_version": 1, "steps": [
        {"id": "s1", "plugin": "builtin.convert_onnx", "params": {"exporter": "legacy", "opset": 17}}],
        "evaluation": {"latency": {"batch_sizes": [1], "runs": 5, "warmup": 1}}}))
    out = tmp_path / "out"
    code = main(["run", str(pipe), str(model), "--data", str(data), "--workspace", str(tmp_path / "ws"),
                 "--out", str(out)])
    captured = capsys.readouterr().out
    assert code == 0
    assert "s1: Convert to ONNX" in captured and "eval.npz (n=40)" in captured
    assert (out / "model.onnx").is_file() and json.loads((out / "results.json").read_text())["status"] == "done"


def test_run_output_keeps_the_shape_of_older_runs(tiny_torch_model, tmp_path, capsys):
    """results.json / run.json have the keys the pre-typed code wrote (stored demo run), plus schema_version."""
    model, data = tiny_torch_model
    pipe = tmp_path / "p.json"
    pipe.write_text(json.dumps({"format": "slimline.pipeline", "schema_version": 1, "steps": [
        {"id": "s1", "plugin": "builtin.convert_onnx", "params": {"exporter": "legacy", "opset": 17}}],
        "evaluation": {"latency": {"batch_sizes": [1, 8], "runs": 3, "warmup": 1}}}))
    out = tmp_path / "out"
    assert main(["run", str(pipe), str(model), "--data", str(data), "--workspace", str(tmp_path / "ws"),
                 "--out", str(out)]) == 0
    old = json.loads((Path(__file__).parents[1] / "core" / "fixtures" / "run_v1_demo.json").read_text())
    new = json.loads((out / "results.json").read_text())
    run_json = json.loads(next((tmp_path / "ws" / "runs").glob("*/run.json")).read_text())
    assert new == run_json and new["schema_version"] == 2
    assert set(new) == set(old) | {"schema_version"}
    for got, want in zip(new["results"], old["results"]):  # original, then a step
        assert set(got) == set(want)
        for part in ("size", "fidelity", "accuracy", "model"):
            added = set(Fidelity._TASK_KEYS) if part == "fidelity" else set()  # task-aware fidelity, additive
            assert set(got[part]) - added == set(want[part]), part
        assert set(got["latency"]) == {"1", "8"}
        # the old keys all stay; timing conditions (measured_at, noisy, vs_input, …) are added
        assert set(got["latency"]["1"]) >= set(next(iter(want["latency"].values())))
    assert "tables" not in new["results"][0] and "tables" in new["results"][1]


def test_run_json_stdout_is_json_alone(tiny_torch_model, tmp_path, capsys):
    """`run --json --out`: stdout parses as the run record; the "wrote ..." note goes to stderr."""
    model, data = tiny_torch_model
    pipe = tmp_path / "p.json"
    pipe.write_text(json.dumps({"format": "slimline.pipeline", "schema_version": 1, "steps": [
        {"id": "s1", "plugin": "builtin.convert_onnx", "params": {"exporter": "legacy", "opset": 17}}],
        "evaluation": {"latency": {"batch_sizes": [1], "runs": 3, "warmup": 1}}}))
    out = tmp_path / "out"
    assert main(["run", str(pipe), str(model), "--data", str(data), "--workspace", str(tmp_path / "ws"),
                 "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["status"] == "done" and [r["step_id"] for r in doc["results"]] == ["original", "s1"]
    assert doc == json.loads((out / "results.json").read_text())
    assert f"wrote the final model and results to {out}" in captured.err


def test_run_failure_exits_nonzero_naming_step(tiny_torch_model, tmp_path, capsys):
    model, data = tiny_torch_model
    pipe = tmp_path / "p.json"
    pipe.write_text(json.dumps({"format": "slimline.pipeline", "schema_version": 1, "steps": [
        {"id": "q1", "plugin": "builtin.quantize_dynamic", "params": {}}],
        "evaluation": {"latency": {"batch_sizes": [1], "runs": 3, "warmup": 1}}}))
    code = main(["run", str(pipe), str(model), "--workspace", str(tmp_path / "ws")])
    err = capsys.readouterr().err
    assert code == 1 and "q1" in err and "Convert to ONNX" in err


def test_help_everywhere():
    for args in (["--help"], ["inspect", "--help"], ["run", "--help"], ["bench", "--help"], ["plugins", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 0


def test_plugins_lists_every_builtin(capsys):
    assert main(["plugins", "--json"]) == 0
    ids = {p["id"] for p in json.loads(capsys.readouterr().out)}
    assert {"builtin.convert_onnx", "builtin.quantize_dynamic", "builtin.quantize_static",
            "builtin.quantize_fp16", "builtin.prune_magnitude", "builtin.prune_structured",
            "builtin.lowrank", "builtin.distill"} <= ids


def test_console_script_version():
    out = subprocess.run([sys.executable, "-m", "slimline.core.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("slimline ")
