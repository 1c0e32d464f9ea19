"""Screenshots of the main views on the demo (run under xvfb-run; not a test).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python tests/gui/screenshots.py [OUT_DIR] [--run] [--dark]

--model PATH opens that model (a GGUF or HF folder of an LLM, say) instead of the demo and captures only the
inspector: its layer table with the repeated blocks folded, then unfolded (``llm_inspect*.png``).

--run runs the demo pipeline uncached (so the distillation loss curve fills live) and
captures the run while training, the finished charts at both batch sizes, the step
cards, the results with the Pareto front and the export dialog after a verified
ONNX export. --dark uses the dark palette (files get a ``dark_`` prefix). Set
SHOTS_WORKSPACE to reuse a workspace (a second --run is then cached and fast).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path


def wait(app, cond, timeout=60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        app.processEvents()
        if cond():
            return True
        time.sleep(0.02)
    return False


def isolated_app(prefix: str, theme: str = "light"):
    """(QApplication, preferences, settings folder): settings live in a fresh temporary folder, so the user's own
    are never read or changed; the workspace is SHOTS_WORKSPACE or a folder inside it."""
    home = tempfile.mkdtemp(prefix=prefix)
    os.environ["XDG_CONFIG_HOME"] = home
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, home)
    from slimline.gui import settings as st
    from slimline.gui.app import tune_interpreter
    from slimline.gui.theme import apply_theme

    tune_interpreter()
    app = QApplication(sys.argv[:1])
    app.setOrganizationName(st.ORG)
    app.setApplicationName(st.APP)
    apply_theme(app, theme)
    prefs = st.Preferences.load()
    prefs.workspace = os.environ.get("SHOTS_WORKSPACE", str(Path(home) / "ws"))
    return app, prefs, home


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else "/tmp/shots")
    out.mkdir(parents=True, exist_ok=True)
    dark = "--dark" in sys.argv
    prefix = "dark_" if dark else ""
    app, prefs, home = isolated_app("slimline-shots-", "dark" if dark else "light")
    from slimline.gui.main_window import TAB_INSPECT, TAB_PIPELINE, TAB_RESULTS, TAB_RUN, TAB_START, MainWindow
    prefs.save()
    win = MainWindow()
    win.ask_unsaved = lambda: "discard"
    win.resize(1580, 960)
    win.show()

    def shot(name: str, widget=None) -> None:
        wait(app, lambda: False, 0.4)
        (widget or win).grab().save(str(out / f"{prefix}{name}.png"))
        print("saved", out / f"{prefix}{name}.png", flush=True)

    wait(app, lambda: False, 0.5)
    shot("01_start")
    got = []
    win.inspector.stats_ready.connect(lambda: got.append(1))
    if "--model" in sys.argv:
        return _model_shots(app, win, sys.argv[sys.argv.index("--model") + 1], got, shot, out)
    win.open_demo()
    wait(app, lambda: win.handle is not None and win.data_path != "", 60)
    wait(app, lambda: bool(got), 60)
    wait(app, lambda: win.inspector.histogram.series != [], 30)
    win.tabs.setCurrentIndex(TAB_INSPECT)
    shot("02_inspect")
    win.tabs.setCurrentIndex(TAB_PIPELINE)
    if win.doc.steps:
        win.editor.select_step(win.doc.steps[1 if len(win.doc.steps) > 1 else 0].id)
    shot("03_pipeline")
    if "--run" in sys.argv:
        win.use_cache = "SHOTS_WORKSPACE" in os.environ and dark  # a dark re-take may reuse the light run
        status: list[str] = []
        win.run_finished.connect(status.append)
        charts = win.run_view.charts
        win.run_pipeline()
        if not win.use_cache and wait(app, lambda: charts.loss_point_count() > 120 or bool(status), 600):
            wait(app, lambda: False, 0.6)
            shot("04_run_live")
        wait(app, lambda: bool(status), 900)
        charts.flush()
        win.tabs.setCurrentIndex(TAB_RUN)
        shot("05_run_done")
        if 64 in charts.batches():
            charts.set_batch(64)
            shot("06_run_batch64")
            charts.set_batch(1)
        win.tabs.setCurrentIndex(TAB_PIPELINE)
        if win.doc.steps:
            win.editor.select_step(win.doc.steps[-1].id)
        shot("07_pipeline_after_run")
        win.tabs.setCurrentIndex(TAB_RESULTS)
        shot("08_results")
        dlg = win.open_export()
        if dlg is not None:
            dlg.set_format("onnx")
            dlg.out_edit.setText(str(Path(home) / "export"))
            done: list[dict] = []
            dlg.exported.connect(done.append)
            dlg.export_failed.connect(lambda m: done.append({"failed": m}))
            dlg._on_export_clicked()
            wait(app, lambda: bool(done), 300)
            shot("09_export", dlg)
            dlg.reject()
        win.tabs.setCurrentIndex(TAB_INSPECT)
        wait(app, lambda: False, 3.0)
        shot("10_inspect_after")
    win.tabs.setCurrentIndex(TAB_START)
    print("saved to", out)
    win.doc.undo_stack.setClean()
    win.close()
    return 0


def _model_shots(app, win, path: str, got: list, shot, out: Path) -> int:
    """The inspector on one model: blocks folded (as it opens), then the first group unfolded."""
    from slimline.gui.main_window import TAB_INSPECT

    win.open_model(path)
    wait(app, lambda: win.handle is not None, 600)
    wait(app, lambda: bool(got), 600)
    win.tabs.setCurrentIndex(TAB_INSPECT)
    shot("llm_inspect")
    layers = win.inspector.layers
    if layers.model.groups():
        layers.set_group_expanded(0, True)
        layers.table.scrollToTop()
        shot("llm_inspect_expanded")
    print("saved to", out)
    win.doc.undo_stack.setClean()
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
