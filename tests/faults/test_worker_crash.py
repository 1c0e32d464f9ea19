"""A runtime that segfaults inside the worker: the run fails naming the step, the parent and the
window stay up, nothing half-written is left, and the next run works."""
from __future__ import annotations

import json
import os

import pytest
from fault_helpers import cache_is_consistent

from slimline.core.history import load_run, run_dir
from slimline.core.jobs import start_pipeline_job
from slimline.core.pipeline import parse_pipeline

EVAL = {"latency": {"batch_sizes": [1], "runs": 3, "warmup": 1, "threads": 1}}


def _pipe(*steps):
    return parse_pipeline({"format": "slimline.pipeline", "schema_version": 1, "name": "faults",
                           "steps": list(steps), "evaluation": EVAL})


def test_segfault_in_worker_reports_the_step_and_parent_survives(tiny, tmp_path, fault_plugins):
    model, data = tiny
    ws = tmp_path / "ws"
    pipe = _pipe({"id": "ok", "plugin": "faults.sleepy", "params": {"seconds": 0}},
                 {"id": "boom", "plugin": "faults.segfault"})
    job = start_pipeline_job(pipe, model, data_path=str(data), workspace=ws)
    events = job.wait(timeout=120)
    final = events[-1]
    assert final.type == "failed", final
    assert "SIGSEGV" in final.message and "boom" in final.message, final
    assert final.step_id == "boom" and final.subject == "step boom" and final.hint
    assert job.pid is not None and not job.alive
    assert os.getpid() > 0  # we are still here
    record = load_run(run_dir(ws, job.run_id))
    assert record.status == "failed" and record.error.step_id == "boom"
    assert [r.step_id for r in record.results] == ["original", "ok"]  # finished steps kept
    assert cache_is_consistent(ws / "cache") == []
    # the parent can run again right away
    again = start_pipeline_job(_pipe({"id": "ok", "plugin": "faults.sleepy", "params": {"seconds": 0}}),
                               model, data_path=str(data), workspace=ws).wait(timeout=120)
    assert again[-1].type == "done", again[-1]


def test_gui_survives_a_segfaulting_worker(tiny, tmp_path, fault_plugins, gui_settings, qtbot):
    pytest.importorskip("PySide6")
    from slimline.gui.main_window import MainWindow

    model, data = tiny
    win = MainWindow()
    win.ask_unsaved = lambda: "discard"
    qtbot.addWidget(win)
    win.show()
    try:
        with qtbot.waitSignal(win.model_opened, timeout=30000):
            win.open_model(str(model))

        def load(steps, name):
            p = tmp_path / name
            p.write_text(json.dumps({"format": "slimline.pipeline", "schema_version": 1, "name": name,
                                     "steps": steps, "evaluation": {**EVAL, "data": str(data)}}))
            win.open_pipeline(str(p))

        load([{"id": "boom", "plugin": "faults.segfault"}], "crash.json")
        with qtbot.waitSignal(win.run_finished, timeout=120000) as sig:
            win.run_pipeline()
        assert sig.args[0] == "failed"
        assert win.banner.isVisible()
        text = win.banner.label.text()
        assert "crashed" in text and "SIGSEGV" in text, text
        assert not win.controller.running and win.act_run.isEnabled() and not win.act_cancel.isEnabled()
        assert win.isVisible()
        # the window is still fully usable: the next run completes
        load([{"id": "ok", "plugin": "faults.sleepy", "params": {"seconds": 0}}], "fine.json")
        with qtbot.waitSignal(win.run_finished, timeout=120000) as sig:
            win.run_pipeline()
        assert sig.args[0] == "done", win.run_view.log.toPlainText()[-2000:]
    finally:
        if win.controller.running:
            win.controller.cancel()
            qtbot.waitUntil(lambda: not win.controller.running, timeout=10000)
        from slimline.gui.workers import wait_all

        wait_all(10000)
