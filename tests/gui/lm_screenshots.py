"""Screenshots of a language model in the window (run under xvfb-run; not a test).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python tests/gui/lm_screenshots.py [OUT_DIR] [MODEL_DIR TEXT]

Without MODEL_DIR a tiny Llama is trained on stdlib docstrings (a few seconds). The window
opens the model, attaches the text (as token windows), runs two magnitude-prune steps
and saves the Run tab (perplexity / decode tokens/s / size per step, generations side by
side with the first divergence highlighted) and the Results tab.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: `tests` from the repo root

from tests.gui.screenshots import wait  # noqa: E402


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = Path(args[0] if args else "/tmp/lm_shots")
    out.mkdir(parents=True, exist_ok=True)
    home = tempfile.mkdtemp(prefix="slimline-lmshots-")
    os.environ["XDG_CONFIG_HOME"] = home
    if len(args) >= 3:
        model, text = Path(args[1]), Path(args[2])
    else:
        import torch

        from tests.core import modelfiles as mf

        torch.set_num_threads(1)
        model = mf.hf_llama(Path(home) / "llama", train_steps=400, hidden=96, layers=3)
        text = Path(home) / "llama-corpus.txt"
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, home)
    from slimline.gui import settings as st
    from slimline.gui.main_window import TAB_RESULTS, TAB_RUN, MainWindow
    from slimline.gui.theme import apply_theme

    app = QApplication(sys.argv[:1])
    app.setOrganizationName(st.ORG)
    app.setApplicationName(st.APP)
    apply_theme(app, "light")
    prefs = st.Preferences.load()
    prefs.workspace = str(Path(home) / "ws")
    prefs.threads = int(os.environ.get("SHOTS_THREADS", "1"))
    prefs.save()
    win = MainWindow()
    win.ask_unsaved = lambda: "discard"
    win.resize(1580, 1000)
    win.show()

    def shot(name: str) -> None:
        wait(app, lambda: False, 0.5)
        win.grab().save(str(out / f"{name}.png"))
        print("saved", out / f"{name}.png", flush=True)

    opened: list[str] = []
    win.model_opened.connect(lambda *_: opened.append("model"))
    win.data_loaded.connect(lambda *_: opened.append("data"))
    win.open_model(str(model))
    wait(app, lambda: "model" in opened, 120)
    win.open_data(str(text))
    wait(app, lambda: "data" in opened, 120)
    pipe = Path(home) / "lm_pipeline.json"
    pipe.write_text(json.dumps({
        "format": "slimline.pipeline", "schema_version": 1, "name": "LM prune",
        "steps": [{"id": "s1", "plugin": "builtin.prune_magnitude", "params": {"sparsity": 0.3}},
                  {"id": "s2", "plugin": "builtin.prune_magnitude", "params": {"sparsity": 0.6}}],
        "evaluation": {"lm": {"window_length": 64, "window_count": 12, "max_new_tokens": 24}}}))
    win.open_pipeline(str(pipe))
    status: list[str] = []
    win.run_finished.connect(status.append)
    win.run_pipeline()
    wait(app, lambda: bool(status), 900)
    print("run:", status, flush=True)
    win.run_view.charts.flush()
    win.tabs.setCurrentIndex(TAB_RUN)
    shot("lm_01_run")
    win.tabs.setCurrentIndex(TAB_RESULTS)
    shot("lm_02_results")
    win.doc.undo_stack.setClean()
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
