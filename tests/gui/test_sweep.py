"""The sweep dialog with the real engine: grid editor, progress per variant, results in the window, cancel."""
from __future__ import annotations

import json
import time

from PySide6.QtCore import Qt

import slimline.core.engines.sweep  # noqa: F401  (a broken engine import must fail these tests, not skip them)


def open_with_pipeline(window, qtbot, tmp_path, model, data, steps) -> None:
    with qtbot.waitSignal(window.model_opened, timeout=30000):
        window.open_model(str(model))
    with qtbot.waitSignal(window.data_loaded, timeout=30000):
        window.open_data(str(data))
    doc = {"format": "slimline.pipeline", "schema_version": 1, "name": "sweep test", "steps": steps,
           "evaluation": {"data": str(data), "train_data": str(data),
                          "latency": {"batch_sizes": [1], "runs": 3, "warmup": 1, "threads": 1}}}
    p = tmp_path / "pipe.json"
    p.write_text(json.dumps(doc))
    window.open_pipeline(str(p))


def test_sweep_dialog_runs_the_grid_and_the_variants_reach_results(window, qtbot, tiny_model, tmp_path):
    model, data = tiny_model
    open_with_pipeline(window, qtbot, tmp_path, model, data,
                       [{"id": "s1", "plugin": "builtin.prune_magnitude", "params": {"sparsity": 0.5}}])
    before = set(window.session.runs)
    window.act_sweep.trigger()
    dlg = window.sweep_dialog
    assert dlg is not None and dlg.isVisible()
    # the editor starts with the first step and its first parameter; a switch/choice gets all its values
    assert dlg.grid.rowCount() == 1 and dlg.grid_entries()[0].startswith("s1.target=")
    dlg.grid.removeRow(0)
    dlg.add_row("s1", "sparsity", "0.25, 1.5")
    assert dlg.validate() == 0 and "s1.sparsity=1.5" in dlg.count_label.text()
    assert not dlg.run_button.isEnabled()
    dlg.grid.removeRow(0)
    dlg.add_row("s1", "sparsity", "0.25, 0.5")
    dlg.add_row("s1", "scope")
    assert dlg.grid_entries() == ["s1.sparsity=0.25, 0.5", "s1.scope=layer, global"]
    assert dlg.validate() == 4 and dlg.count_label.text() == "4 variants"
    dlg.workers_spin.setValue(2)
    with qtbot.waitSignal(dlg.sweep_finished, timeout=240000) as sig:
        qtbot.mouseClick(dlg.run_button, Qt.MouseButton.LeftButton)
        assert dlg.running and dlg.cancel_button.isEnabled() and not dlg.grid.isEnabled()
    assert sig.args == ["done"], dlg.status.text()
    assert [dlg.status_of(i) for i in range(4)] == ["done"] * 4, [dlg.table.item(i, 8).text() for i in range(4)]
    assert dlg.table.item(0, 1).text() == "s1.sparsity=0.25 s1.scope=layer" and dlg.table.item(0, 5).text()
    assert "4/4 variants done" in dlg.status.text()
    new = set(dlg.record["outcomes"][i]["run_id"] for i in range(4))
    qtbot.waitUntil(lambda: new <= set(window.session.runs) - before, timeout=10000)
    names = {window.session.runs[r].pipeline_name for r in new}
    assert names == {f"sweep test [s1.sparsity={s} s1.scope={c}]" for s in (0.25, 0.5) for c in ("layer", "global")}
    qtbot.waitUntil(lambda: new <= {v.run_id for v in window.variants.variants}, timeout=10000)


def test_cancel_in_the_sweep_dialog_stops_running_variants(window, qtbot, tiny_model, tmp_path):
    model, data = tiny_model
    open_with_pipeline(window, qtbot, tmp_path, model, data, [
        {"id": "s1", "plugin": "builtin.distill", "params": {"epochs": 1000, "validation_fraction": 0.0,
                                                               "batch_size": 8}}])
    dlg = window.open_sweep()
    dlg.grid.removeRow(0)
    dlg.add_row("s1", "learning_rate", "0.001, 0.002, 0.003")
    dlg.workers_spin.setValue(1)
    dlg.start()
    qtbot.waitUntil(lambda: "epoch" in dlg.table.item(0, 8).text(), timeout=120000)  # training, live
    assert dlg.status_of(0) == "running" and dlg.status_of(1) == "queued"
    t0 = time.monotonic()
    with qtbot.waitSignal(dlg.sweep_finished, timeout=30000) as sig:
        dlg.cancel()
    assert sig.args == ["cancelled"]
    assert time.monotonic() - t0 < 15
    assert [dlg.status_of(i) for i in range(3)] == ["cancelled"] * 3
    assert "cancelled" in dlg.status.text() and dlg.run_button.isEnabled()


def test_without_ray_the_dialog_says_what_to_install(qtbot, monkeypatch, tmp_path):
    from PySide6.QtGui import QStandardItemModel

    from slimline.core.pipeline import parse_pipeline
    from slimline.gui import sweep_dialog

    monkeypatch.setattr(sweep_dialog, "engine_problem",
                        lambda name: "the Ray engine needs the ray package: pip install slimline[ray]" if name == "ray"
                        else "")
    pipe = parse_pipeline({"format": "slimline.pipeline", "schema_version": 1, "name": "p",
                           "steps": [{"id": "s1", "plugin": "builtin.quantize_dynamic", "params": {}}]})
    dlg = sweep_dialog.SweepDialog(pipe, str(tmp_path / "m.onnx"), data_path=None, workspace=str(tmp_path))
    qtbot.addWidget(dlg)
    model = dlg.engine_combo.model()
    assert isinstance(model, QStandardItemModel) and not model.item(1).isEnabled()
    assert "pip install slimline[ray]" in model.item(1).toolTip() and "pip install" in dlg.engine_note.text()
    assert not dlg.address_edit.isEnabled() and not dlg.shared_edit.isEnabled()
    # a switch starts with both of its values
    dlg.grid.removeRow(0)
    dlg.add_row("s1", "per_channel")
    assert dlg.grid_entries() == ["s1.per_channel=true, false"] and dlg.validate() == 2
