"""Running from the window with the real engine: live charts, cancel, variants and export."""
from __future__ import annotations

import json
import time
from pathlib import Path

import slimline.core.jobs  # noqa: F401  (a broken engine import must fail these tests, not skip them)


def fast_evaluation(data: Path) -> dict:
    return {"data": str(data), "latency": {"batch_sizes": [1], "runs": 5, "warmup": 1, "threads": 1}}


def open_tiny(window, qtbot, model, data) -> None:
    with qtbot.waitSignal(window.model_opened, timeout=30000):
        window.open_model(str(model))
    with qtbot.waitSignal(window.data_loaded, timeout=30000):
        window.open_data(str(data))


def load_steps(window, tmp_path, steps, data, train: bool = False) -> None:
    evaluation = {**fast_evaluation(data), **({"train_data": str(data)} if train else {})}
    doc = {"format": "slimline.pipeline", "schema_version": 1, "name": "gui test",
           "steps": steps, "evaluation": evaluation}
    p = tmp_path / "pipe.json"
    p.write_text(json.dumps(doc))
    window.open_pipeline(str(p))
    assert not window.banner.isVisible(), window.banner.label.text()


def test_run_charts_get_one_point_per_step(window, qtbot, tiny_model, tmp_path):
    model, data = tiny_model
    open_tiny(window, qtbot, model, data)
    load_steps(window, tmp_path, [
        {"id": "s1", "plugin": "builtin.prune_magnitude", "params": {"sparsity": 0.5}},
        {"id": "s2", "plugin": "builtin.convert_onnx", "params": {"exporter": "legacy"}},
    ], data)
    results = []
    window.controller.step_result_received.connect(lambda r: results.append(r.step_id))
    from PySide6.QtCore import Qt

    with qtbot.waitSignal(window.run_finished, timeout=180000) as sig:
        qtbot.keyClick(window, "r", modifier=Qt.KeyboardModifier.ControlModifier)
    assert sig.args[0] == "done", window.run_view.message.text() + window.run_view.log.toPlainText()
    assert results == ["original", "s1", "s2"]
    charts = window.run_view.charts
    qtbot.waitUntil(lambda: charts.series_points == {"size": 3, "latency": 3, "quality": 3}, timeout=3000)
    assert "digits" not in charts.acc_plot.plotItem.titleLabel.text
    assert "n=64" in charts.acc_plot.plotItem.titleLabel.text
    assert "p90" in charts.lat_plot.plotItem.titleLabel.text
    # cards show each step's numbers and the run is a set of variants
    assert "MB" in window.editor.lane.cards["s1"].status_label.text()
    assert [v.step_id for v in window.variants.variants] == ["original", "s1", "s2"]
    assert window.variants.selected is not None and window.variants.selected.step_id == "s2"
    assert window.variants.pareto_keys
    assert "p50" in window.run_view.log.toPlainText() or window.run_view.log.toPlainText()


def test_cancel_stops_run_and_leaves_no_output(window, qtbot, tiny_model, tmp_path):
    model, data = tiny_model
    open_tiny(window, qtbot, model, data)
    load_steps(window, tmp_path, [
        {"id": "s1", "plugin": "builtin.distill", "params": {"epochs": 1000, "validation_fraction": 0.0,
                                                               "batch_size": 8}},
    ], data, train=True)
    started = []
    window.controller.step_started.connect(lambda ev: started.append(ev.step_id))
    window.run_pipeline()
    assert window.controller.running and window.run_view.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: "s1" in started, timeout=120000)
    qtbot.waitUntil(lambda: window.run_view.charts.loss_point_count() > 20, timeout=60000)  # training, live
    assert window.controller.running
    t0 = time.monotonic()
    with qtbot.waitSignal(window.run_finished, timeout=15000) as sig:
        window.cancel_run()
    elapsed = time.monotonic() - t0
    assert sig.args[0] == "cancelled"
    assert elapsed < 3.0, f"cancel took {elapsed:.2f} s"
    assert not window.controller.running and window.run_view.run_button.isEnabled()
    cache = Path(window.prefs.workspace_path()) / "cache"
    leftovers = [p.name for p in cache.iterdir()] if cache.exists() else []
    assert leftovers == [], leftovers
    run = json.loads((Path(window.prefs.workspace_path()) / "runs" / window.current_run_id / "run.json").read_text())
    assert run["status"] == "cancelled"
    assert [r["step_id"] for r in run["results"]] == ["original"]


def _fake_record(run_id: str) -> dict:
    def res(sid, size, p50, top1, flags=()):
        return {"step_id": sid, "title": sid.upper(), "plugin": "",
                "model": {"path": f"/tmp/{sid}.onnx", "format": "onnx", "family": "onnx"},
                "size": {"bytes_on_disk": size, "param_count": 1},
                "latency": {"1": {"p50_ms": p50, "p90_ms": p50 * 1.1, "batch": 1, "runs": 5, "input_kind": "dataset",
                              "mean_ms": p50, "std_ms": 0.0, "min_ms": p50, "max_ms": p50 * 1.2, "spread": 0.1,
                              "warmup": 1, "threads": 1, "provider": "cpu", "device_name": "cpu",
                              "input_shapes": {"x": [1, 4]}}},
                "accuracy": {"dataset": "eval", "n": 100, "top1": top1}, "flags": list(flags), "warnings": []}
    return {"run_id": run_id, "status": "done", "created": "2026-01-01T00:00:00", "pipeline": {"name": "hist"},
            "results": [res("original", 3_000_000, 2.0, 0.99), res("s1", 1_000_000, 1.0, 0.98),
                        res("s2", 2_000_000, 3.0, 0.90, ["slower"])]}


def test_select_variant_preselects_it_in_export_dialog(isolated_settings, qtbot):
    ws = Path(isolated_settings.workspace)
    for rid in ("20260101-000000-aaaaaa", "20260102-000000-bbbbbb"):
        p = ws / "runs" / rid / "run.json"
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps(_fake_record(rid)))
    from slimline.gui.main_window import MainWindow

    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: len(win.variants.variants) == 6, timeout=10000)
    # Pareto on size: originals (biggest, most accurate) and s1 are on the front; s2 is dominated
    assert "20260101-000000-aaaaaa/s1" in win.variants.pareto_keys
    assert "20260101-000000-aaaaaa/s2" not in win.variants.pareto_keys
    key = "20260102-000000-bbbbbb/s1"
    with qtbot.waitSignal(win.variants.variant_selected, timeout=2000):
        win.variants.click_point("size", key)
    assert win.variants.selected.key == key
    rows = win.variants.table.selectionModel().selectedRows()
    assert [win.variants.model.variants[r.row()].key for r in rows] == [key]
    win.tabs.setCurrentWidget(win.variants)
    from PySide6.QtCore import Qt

    qtbot.keyClick(win, "e", modifier=Qt.KeyboardModifier.ControlModifier)
    dlg = win.export_dialog
    assert dlg.isVisible()
    assert dlg.variant_combo.currentData() == key
    assert dlg.selected_variant().key == key
    assert "slower" not in dlg.details.text()
    dlg.reject()
