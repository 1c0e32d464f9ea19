"""Screenshots of the main views on the demo (run under xvfb-run; not a test).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python tests/gui/screenshots.py [OUT_DIR] [--run]
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


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else "/tmp/shots")
    out.mkdir(parents=True, exist_ok=True)
    home = tempfile.mkdtemp(prefix="slimline-shots-")
    os.environ["XDG_CONFIG_HOME"] = home
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, home)
    from slimline.gui import settings as st
    from slimline.gui.main_window import MainWindow, TAB_INSPECT, TAB_PIPELINE, TAB_RESULTS, TAB_RUN, TAB_START
    from slimline.gui.theme import apply_theme

    app = QApplication(sys.argv[:1])
    app.setOrganizationName(st.ORG)
    app.setApplicationName(st.APP)
    apply_theme(app, "light")
    prefs = st.Preferences.load()
    prefs.workspace = os.environ.get("SHOTS_WORKSPACE", str(Path(home) / "ws"))
    prefs.save()
    win = MainWindow()
    win.resize(1580, 960)
    win.show()
    wait(app, lambda: False, 0.5)
    win.grab().save(str(out / "01_start.png"))
    win.open_demo()
    wait(app, lambda: win.handle is not None, 60)
    got = []
    win.inspector.stats_ready.connect(lambda: got.append(1))
    wait(app, lambda: bool(got), 60)
    wait(app, lambda: win.inspector.histogram.series != [], 30)
    wait(app, lambda: False, 1.0)
    win.tabs.setCurrentIndex(TAB_INSPECT)
    wait(app, lambda: False, 0.5)
    win.grab().save(str(out / "02_inspect.png"))
    win.tabs.setCurrentIndex(TAB_PIPELINE)
    if win.doc.steps:
        win.editor.select_step(win.doc.steps[0].id)
    wait(app, lambda: False, 0.5)
    win.grab().save(str(out / "03_pipeline.png"))
    if "--run" in sys.argv:
        win.run_pipeline()
        wait(app, lambda: win.controller.running is False and win.run_view.overall.value() > 0, 900)
        wait(app, lambda: False, 1.0)
        win.tabs.setCurrentIndex(TAB_RUN)
        wait(app, lambda: False, 0.5)
        win.grab().save(str(out / "04_run.png"))
        win.tabs.setCurrentIndex(TAB_RESULTS)
        wait(app, lambda: False, 0.5)
        win.grab().save(str(out / "05_results.png"))
        win.tabs.setCurrentIndex(TAB_INSPECT)
        wait(app, lambda: False, 3.0)
        win.grab().save(str(out / "06_inspect_after.png"))
    win.tabs.setCurrentIndex(TAB_START)
    print("saved to", out)
    win.doc.undo_stack.setClean()
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
