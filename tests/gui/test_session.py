"""One engine, one session: the window runs what the CLI runs, sees the CLI's runs, and keeps state per model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PRUNE, QUANT = "builtin.prune_magnitude", "builtin.quantize_dynamic"


def _open(window, qtbot, model, data=None) -> None:
    with qtbot.waitSignal(window.model_opened, timeout=30000):
        window.open_model(str(model))
    if data is not None:
        with qtbot.waitSignal(window.data_loaded, timeout=30000):
            window.open_data(str(data))


def _add_from_palette(editor, plugin_id: str) -> None:
    """As a double click on the palette entry does."""
    item = editor.palette_view.items[plugin_id]
    assert not item.isDisabled(), editor.palette_view.reason(plugin_id)
    editor.palette_view.tree.itemActivated.emit(item, 0)


def _sizes(record: dict) -> dict[str, tuple[int, int]]:
    return {r["step_id"]: (r["size"]["bytes_on_disk"], r["size"].get("param_count")) for r in record["results"]}


def test_onnx_prune_then_dynamic_int8_runs_in_the_window_as_in_the_cli(window, qtbot, make_onnx_mlp, tmp_path):
    model, data = make_onnx_mlp()
    _open(window, qtbot, model, data)
    editor = window.editor
    _add_from_palette(editor, PRUNE)
    _add_from_palette(editor, QUANT)
    assert [s.plugin for s in window.doc.steps] == [PRUNE, QUANT]
    # magnitude pruning keeps the ONNX format, so the quantizer's input is ONNX: no problem, as in `slimline run`
    assert editor.problems == {}, editor.problems
    assert "OK" in editor.chain_label.text()
    with qtbot.waitSignal(window.run_finished, timeout=240000) as sig:
        window.run_pipeline()
    assert sig.args[0] == "done", window.banner.label.text() + window.run_view.log.toPlainText()[-3000:]
    ws = window.prefs.workspace_path()
    gui_run = json.loads((ws / "runs" / window.current_run_id / "run.json").read_text())
    assert [r["step_id"] for r in gui_run["results"]] == ["original", "s1", "s2"]
    assert all("failed" not in (r.get("flags") or []) for r in gui_run["results"])
    assert set(editor.step_results) == {"s1", "s2"}
    assert "MB" in editor.lane.cards["s2"].status_label.text()
    # the same pipeline through the CLI gives the same models (sizes; latency aside)
    pipe = tmp_path / "pipe.json"
    assert window.save_pipeline_as(str(pipe))
    cli_ws = tmp_path / "cli-ws"
    env = {**os.environ, "SLIMLINE_WORKSPACE": str(cli_ws)}
    proc = subprocess.run([sys.executable, "-m", "slimline.core.cli", "run", str(pipe), str(model), "--data", str(data),
                           "--out", str(tmp_path / "cli-out"), "--workspace", str(cli_ws)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rj,) = (cli_ws / "runs").glob("*/run.json")
    cli_run = json.loads(rj.read_text())
    assert cli_run["status"] == "done"
    assert _sizes(cli_run) == _sizes(gui_run)
    assert _sizes(gui_run)["s2"][0] < _sizes(gui_run)["original"][0]


def _record(run_id: str, model_path: Path, sizes=(3_000_000, 1_000_000)) -> dict:
    def res(sid, size, top1):
        return {"step_id": sid, "title": sid, "model": {"path": str(model_path), "format": "onnx", "family": "onnx"},
                "size": {"bytes_on_disk": size, "param_count": 1}, "flags": [], "warnings": [],
                "latency": {"1": {"p50_ms": 1.0, "p90_ms": 1.1, "batch": 1, "runs": 5, "input_kind": "dataset",
                                  "mean_ms": 1.0, "std_ms": 0.0, "min_ms": 1.0, "max_ms": 1.2, "spread": 0.1,
                                  "warmup": 1, "threads": 1, "provider": "cpu", "device_name": "cpu",
                                  "input_shapes": {"x": [1, 4]}}},
                "accuracy": {"dataset": "eval", "n": 10, "top1": top1}}
    return {"run_id": run_id, "status": "done", "created": "2026-01-01T00:00:00", "pipeline": {"name": "p"},
            "model": {"path": str(model_path), "format": "onnx", "family": "onnx"},
            "results": [res("original", sizes[0], 0.99), res("s1", sizes[1], 0.98)]}


def _write(ws: Path, record: dict) -> None:
    p = ws / "runs" / record["run_id"] / "run.json"
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps(record))


def test_runs_made_with_the_cli_appear_in_results(isolated_settings, qtbot, make_tiny_mlp):
    from slimline.core.jobs import start_pipeline_job
    from slimline.gui.main_window import MainWindow

    model, data = make_tiny_mlp()
    ws = Path(isolated_settings.workspace)
    pipe = {"format": "slimline.pipeline", "schema_version": 1, "name": "cli",
            "steps": [{"id": "s1", "plugin": PRUNE, "params": {"sparsity": 0.5}}],
            "evaluation": {"latency": {"batch_sizes": [1], "runs": 3, "warmup": 1, "threads": 1}}}
    job = start_pipeline_job(pipe, model, data_path=str(data), workspace=ws)  # what `slimline run` starts
    assert job.wait(timeout=180)[-1].type == "done"
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.variants.variant(f"{job.run_id}/s1") is not None, timeout=10000)
    # a run made while the window is open shows up on Refresh (and when the window gains focus)
    late = "20990101-000000-eeeeee"
    _write(ws, _record(late, model))
    assert win.variants.variant(f"{late}/s1") is None
    win.act_refresh.trigger()
    qtbot.waitUntil(lambda: win.variants.variant(f"{late}/s1") is not None, timeout=10000)
    assert set(win.session.runs) == {job.run_id, late}


def test_switching_model_clears_step_results_and_data_for_other_inputs(window, qtbot, make_onnx_mlp, monkeypatch,
                                                                       as_result):
    from slimline.gui.run_controller import RunController

    monkeypatch.setattr(RunController, "start", lambda self, *a, **kw: None)  # the events below stand in for it
    model_a, data_a = make_onnx_mlp(16, "a")
    model_b, _ = make_onnx_mlp(16, "b")
    model_c, _ = make_onnx_mlp(8, "c")
    _open(window, qtbot, model_a, data_a)
    sid = window.doc.add_step(PRUNE)
    window.run_pipeline()
    # what a run reports, through the same signals as a real run
    window.controller.started.emit("r1")
    window.controller.step_result_received.emit(as_result({"step_id": "original", "size": {"bytes_on_disk": 1000}}))
    window.controller.step_result_received.emit(as_result({"step_id": sid, "size": {"bytes_on_disk": 500}}))
    window.controller.log_received.emit("a line of model a's run")
    assert sid in window.editor.step_results and "a line" in window.run_view.log.toPlainText()
    _open(window, qtbot, model_b)   # same inputs: the evaluation data still fits and stays
    assert window.editor.step_results == {} and window.editor.step_status == {}
    assert window.editor.lane.cards[sid].status_label.text() == ""
    assert window.run_view.log.toPlainText() == ""
    assert window.data_path == str(data_a) and "n=48" in window.data_label.text()
    assert window.session.run_original is None
    _open(window, qtbot, model_c)   # other inputs: the data cannot be run against it and is dropped
    assert window.data_path == "" and window.data_label.text() == "No evaluation data"
    assert window.session.effective_data() is None


def test_results_filter_by_model(isolated_settings, qtbot, make_onnx_mlp):
    from slimline.gui.main_window import MainWindow
    from slimline.gui.results import model_key

    model_a, _ = make_onnx_mlp(16, "a")
    model_b, _ = make_onnx_mlp(16, "b")
    ws = Path(isolated_settings.workspace)
    _write(ws, _record("20260101-000000-aaaaaa", model_a))
    _write(ws, _record("20260102-000000-bbbbbb", model_b, sizes=(500_000, 400_000)))
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    view = win.variants
    qtbot.waitUntil(lambda: len(view.variants) == 4, timeout=10000)   # no model open: all models
    assert view.model_combo.count() == 3 and view.model_filter == ""
    _open(win, qtbot, model_a)                                       # default: the open model
    assert view.model_filter == model_key(model_a)
    assert {v.run_id for v in view.variants} == {"20260101-000000-aaaaaa"}
    assert view.pareto_keys == {"20260101-000000-aaaaaa/original", "20260101-000000-aaaaaa/s1"}
    i = view.model_combo.findData(model_key(model_b))
    view.model_combo.setCurrentIndex(i)                              # the user picks another model
    assert {v.run_id for v in view.variants} == {"20260102-000000-bbbbbb"}
    assert len(view.size_plot.listDataItems()[0].points()) == 2      # one model per chart
    view.model_combo.setCurrentIndex(0)
    assert len(view.variants) == 4
