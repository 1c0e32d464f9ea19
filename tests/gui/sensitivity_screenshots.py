"""Screenshots of the Sensitivity panel, click-to-exclude, the Compare tab and a search in Results (not a test).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python tests/gui/sensitivity_screenshots.py [OUT_DIR]

On the bundled demo: the magnitude-prune ranking (computed in this process first with the settings the panel
uses, so the panel's Analyze finds it in the workspace cache), a double-click on the top bar (the layer joins
the step's skip list), a budgeted search whose candidates show in Results (the chosen one a star), and the
Compare tab diffing the original with the search's choice.
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
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "build/screenshots").resolve()
    out.mkdir(parents=True, exist_ok=True)
    home = tempfile.mkdtemp(prefix="slimline-sens-shots-")
    os.environ["XDG_CONFIG_HOME"] = home
    ws = Path(os.environ.get("SHOTS_WORKSPACE", str(Path(home) / "ws")))
    from slimline.core.data import DataBundle
    from slimline.core.demo import demo_paths
    from slimline.core.models import open_model
    from slimline.core.search.models import SearchSettings
    from slimline.core.search.run import search
    from slimline.core.sensitivity.analyze import analyze
    from slimline.core.sensitivity.models import SensitivitySettings

    p = demo_paths()
    model = open_model(p["torch"])
    data = DataBundle.from_paths(eval=p["eval"], train=p["train"], model=model)
    t0 = time.time()
    analyze(model, data, SensitivitySettings(step="builtin.prune_magnitude", modes=["alone"]), workspace=ws)
    found = search(model, data, SearchSettings(step="prune", max_candidates=10), workspace=ws,
                   data_paths=(str(p["eval"]), str(p["train"])))
    print(f"analysis + search in {time.time() - t0:.0f} s: {found.verdict}", flush=True)

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, home)
    from slimline.gui import settings as st
    from slimline.gui.main_window import TAB_COMPARE, TAB_INSPECT, TAB_RESULTS, MainWindow
    from slimline.gui.theme import apply_theme

    app = QApplication(sys.argv[:1])
    app.setOrganizationName(st.ORG)
    app.setApplicationName(st.APP)
    apply_theme(app, "light")
    prefs = st.Preferences.load()
    prefs.workspace = str(ws)
    prefs.save()
    win = MainWindow()
    win.ask_unsaved = lambda: "discard"
    win.resize(1580, 960)
    win.show()

    def shot(name: str, widget=None) -> None:
        wait(app, lambda: False, 0.6)
        (widget or win).grab().save(str(out / f"{name}.png"))
        print("saved", out / f"{name}.png", flush=True)

    got = []
    win.inspector.stats_ready.connect(lambda: got.append(1))
    win.open_demo()
    wait(app, lambda: win.handle is not None and win.data_path != "" and bool(got), 120)
    win.tabs.setCurrentIndex(TAB_INSPECT)
    panel = win.inspector.sensitivity
    win.inspector.lower_tabs.setCurrentWidget(panel)
    panel.select_step("+builtin.prune_magnitude")
    ready = []
    win.sensitivity.result_ready.connect(ready.append)
    panel.analyze_button.click()
    wait(app, lambda: bool(ready), 600)
    panel.chart.click_bar(1)
    wait(app, lambda: len(win.inspector.histogram.series) > 0, 30)
    from slimline.gui.layer_table import COLUMNS

    table = win.inspector.layers.table   # bring the new Sensitivity column into view
    col = [c.key for c in COLUMNS].index("sensitivity")
    table.scrollTo(table.model().index(table.currentIndex().row(), col))
    shot("sens_01_ranking")
    panel.chart.click_bar(0, double=True)
    wait(app, lambda: False, 1.0)
    shot("sens_02_click_to_exclude")
    win.tabs.setCurrentIndex(TAB_RESULTS)
    win.ctl.load_history()
    wait(app, lambda: any(v.run_id == found.run_id for v in win.variants.variants), 60)
    win.variants.model_combo.setCurrentIndex(max(0, win.variants.model_combo.findData(win.session.model_key)))
    win.variants.size_combo.setCurrentIndex(win.variants.size_combo.findData("zip"))   # zeros pay once compressed
    chosen = found.candidate(found.chosen)
    if chosen is not None:
        win.variants.select(f"{found.run_id}/{chosen.step_id}")
    shot("sens_03_search_in_results")
    view = win.diff_view
    win.tabs.setCurrentIndex(TAB_COMPARE)
    if chosen is not None:
        view.choose(f"{found.run_id}/original", f"{found.run_id}/{chosen.step_id}")
    diffs = []
    view.diff_ready.connect(diffs.append)
    view.compare()
    wait(app, lambda: bool(diffs), 300)
    wait(app, lambda: len(view.histogram.series) >= 2, 30)
    shot("sens_04_compare")
    print("saved to", out)
    win.doc.undo_stack.setClean()
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
