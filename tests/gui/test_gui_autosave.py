"""Autosave of the open workspace (debounced, off the UI thread) and the restore offer after a crash."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from slimline.core import autosave


def _open(window, qtbot, model, data) -> None:
    with qtbot.waitSignal(window.model_opened, timeout=30000):
        window.open_model(str(model))
    with qtbot.waitSignal(window.data_loaded, timeout=30000):
        window.open_data(str(data))


def test_changes_are_autosaved_after_a_quiet_second(window, qtbot, tiny_model):
    model, data = tiny_model
    _open(window, qtbot, model, data)
    path = autosave.autosave_path(window.prefs.workspace_path())
    with qtbot.waitSignal(window.autosaved, timeout=5000):
        pass
    t0 = time.monotonic()
    window.doc.add_step("builtin.prune_magnitude")
    window.doc.add_step("builtin.convert_onnx")
    saved_steps = lambda: len(json.loads(path.read_text())["state"]["pipeline"]["steps"])  # noqa: E731
    assert saved_steps() == 0                       # debounced: not written on every edit
    with qtbot.waitSignal(window.autosaved, timeout=5000):
        pass
    assert time.monotonic() - t0 >= 0.9
    doc = json.loads(path.read_text())
    assert doc["clean_shutdown"] is False
    st = doc["state"]
    assert st["model_path"] == str(model) and st["data_path"] == str(data)
    assert [s["plugin"] for s in st["pipeline"]["steps"]] == ["builtin.prune_magnitude", "builtin.convert_onnx"]
    assert st["pipeline_modified"] is True


def test_after_an_unclean_end_the_next_start_offers_restore(isolated_settings, qtbot, tiny_model, tmp_path):
    from slimline.gui.main_window import MainWindow

    model, data = tiny_model
    first = MainWindow()
    first.ask_unsaved = lambda: "discard"
    qtbot.addWidget(first)
    first.show()
    _open(first, qtbot, model, data)
    first.doc.add_step("builtin.prune_magnitude", params={"sparsity": 0.3})
    # a finished run of that session, in the workspace's run history
    rid = "20260401-000000-dddddd"
    run = {"run_id": rid, "status": "running", "created": "2026-04-01T00:00:00", "pipeline": {"name": "p"},
           "results": [{"step_id": "original", "title": "Original",
                        "model": {"path": str(model), "format": "safetensors", "family": "torch"},
                        "size": {"bytes_on_disk": 10, "param_count": 1}}]}
    rd = Path(isolated_settings.workspace) / "runs" / rid
    rd.mkdir(parents=True)
    (rd / "run.json").write_text(json.dumps(run))
    first.session.session_run_ids.append(rid)
    with qtbot.waitSignal(first.autosaved, timeout=5000):
        first.ctl.schedule_autosave()
    # the process "dies": no closeEvent, so no clean-shutdown mark
    first.hide()

    second = MainWindow()
    second.ask_unsaved = lambda: "discard"
    qtbot.addWidget(second)
    second.show()
    with qtbot.waitSignal(second.restore_offered, timeout=5000) as sig:
        pass
    restore = sig.args[0]
    assert "mlp.safetensors" in restore.describe() and "1 steps" in restore.describe()
    qtbot.waitUntil(lambda: second.restore_box is not None, timeout=2000)
    yes = next(b for b in second.restore_box.buttons() if b.text() == "Restore")
    with qtbot.waitSignal(second.session_restored, timeout=30000):
        yes.click()
    qtbot.waitUntil(lambda: second.data_path == str(data), timeout=30000)
    assert second.handle is not None and second.model_path == str(model)
    assert [s.params.get("sparsity") for s in second.doc.steps] == [0.3]
    assert second.doc.modified                                  # unsaved changes stay unsaved
    qtbot.waitUntil(lambda: any(v.run_id == rid for v in second.variants.variants), timeout=5000)
    assert second.variants.runs[rid].status == "interrupted"
    # a clean close means no offer on the next start
    second.close()
    assert autosave.pending_restore(second.prefs.workspace_path()) is None


def test_declining_the_restore_forgets_it(isolated_settings, qtbot):
    from slimline.core.autosave import WorkspaceState, save_state
    from slimline.gui.main_window import MainWindow

    ws = Path(isolated_settings.workspace)
    save_state(ws, WorkspaceState(model_path="/nonexistent/model.onnx"))
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.restore_box is not None, timeout=5000)
    no = next(b for b in win.restore_box.buttons() if b.text() == "Discard")
    no.click()
    assert not autosave.autosave_path(ws).exists()
    assert win.handle is None


CHILD = r"""
import os, sys, time
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtCore import QCoreApplication, QSettings
from PySide6.QtWidgets import QApplication
cfg, model = sys.argv[1], sys.argv[2]
for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
    QSettings.setPath(fmt, QSettings.Scope.UserScope, cfg)
QSettings.setDefaultFormat(QSettings.Format.IniFormat)
app = QApplication([])
QCoreApplication.setOrganizationName("SlimlineTest")
from slimline.gui import settings as st
st.ORG = "SlimlineTest"
from slimline.gui.main_window import MainWindow
win = MainWindow()
win.show()
saved = []
win.autosaved.connect(saved.append)
opened = []
win.model_opened.connect(opened.append)
win.open_model(model)
end = time.monotonic() + 60
while time.monotonic() < end and not opened:
    app.processEvents(); time.sleep(0.01)
win.doc.add_step("builtin.prune_magnitude")
saved.clear()
while time.monotonic() < end and not saved:
    app.processEvents(); time.sleep(0.01)
print("saved", flush=True)
while True:
    app.processEvents(); time.sleep(0.01)
"""


def test_sigkill_then_restart_offers_restore(isolated_settings, qtbot, tiny_model, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    if not hasattr(signal, "SIGKILL"):
        pytest.skip("POSIX only")
    model, _ = tiny_model
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "qsettings"), str(model)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.strip() == "saved", child.stderr.read()[-3000:] if child.poll() is not None else line
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    from slimline.gui.main_window import MainWindow

    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.restore_offered, timeout=5000) as sig:
        pass
    assert sig.args[0].state.model_path == str(model)
    assert [s["plugin"] for s in sig.args[0].state.pipeline["steps"]] == ["builtin.prune_magnitude"]
