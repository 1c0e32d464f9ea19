"""Screenshots of the LLM demo pipeline run in the window on SmolLM2-135M (run under xvfb-run; not a test).

    SLIMLINE_GGUF_CACHE=$(mktemp -d) OMP_NUM_THREADS=2 xvfb-run -a -s "-screen 0 1600x1000x24" \
        .venv/bin/python tests/gui/llm_screenshots.py docs/screenshots \
        [--model GGUF_OR_HF_DIR] [--text TEXT] [--windows 8] [--prompts 2] [--new-tokens 16]

(An empty SLIMLINE_GGUF_CACHE makes the open a first one, so ``llm_01_open.png`` shows its progress
dialog; with the GGUF already dequantized there is no dialog to show. About 8 minutes on 2 busy cores.)

What a user does: open the model (the GGUF from the real-model cache is dequantized once, as a job
with progress), attach the text file, load ``resources/demo/llm_pipeline.json``, make the run small in
the Pipeline tab's language-model settings (typed into the form, as a user would), run (out of process,
uncached), then save the HTML report of that run. Saves:

- ``llm_01_open.png``     the window while the GGUF opens (the progress dialog, the window still live)
- ``llm_02_layers.png``   the Inspect tab: the layer table with the decoder blocks folded into one group
- ``llm_03_settings.png`` the Pipeline tab with the evaluation / language-model settings
- ``llm_04_run.png``      the Run tab: the run table (perplexity with interval, Δ, agreement, tokens/s,
  size per step) and the generations side by side
- ``llm_05_results.png``  the Results tab
- ``llm_report.html``     the run's report (~35 kB), and ``llm_06_report.png`` its top as Qt WebEngine draws it
  (without WebEngine: as QTextBrowser draws it, tables and text but not the SVG charts)

Defaults: SmolLM2 from ~/.cache/slimline/realmodels, the pydoc sentences, 8 windows × 128 tokens,
2 prompts × 16 new tokens, 2 threads.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: `tests` from the repo root

from tests.gui.screenshots import isolated_app, wait  # noqa: E402

REAL = Path.home() / ".cache" / "slimline" / "realmodels"
GGUF = REAL / "smollm2-135m-q4_1" / "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT = REAL / "pydoc-sentences" / "sentences.txt"
DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo" / "llm_pipeline.json"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="/tmp/llm_shots")
    ap.add_argument("--model", default=str(GGUF))
    ap.add_argument("--text", default=str(TEXT))
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--window-length", type=int, default=128)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-run", action="store_true", help="only the open / inspect / settings screenshots")
    return ap.parse_args()


def set_field(form, name: str, value) -> None:
    """Type a value into a generated form field the way a user would (the editor's own signal fires)."""
    from PySide6.QtWidgets import QLineEdit, QSpinBox

    ed = form.editors[name]
    if isinstance(ed, QSpinBox):
        ed.setValue(int(value))
    elif isinstance(ed, QLineEdit):
        ed.setText(str(value))
    else:
        raise TypeError(f"{name}: {type(ed).__name__}")


def main() -> int:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, text = Path(args.model), Path(args.text)
    for p in (model, text):
        if not p.exists():
            print(f"missing {p}: fetch the real models first (tests/realmodels/manifest.py)", file=sys.stderr)
            return 2
    app, prefs, _ = isolated_app("slimline-llmshots-")
    from slimline.gui.main_window import TAB_INSPECT, TAB_PIPELINE, TAB_RESULTS, TAB_RUN, MainWindow
    prefs.threads = args.threads
    prefs.save()
    win = MainWindow()
    win.ask_unsaved = lambda: "discard"
    win.ctl.use_cache = False   # a live run, every step measured now
    win.resize(1580, 1000)
    win.show()

    def shot(name: str, screen: bool = False) -> None:
        """The window; ``screen``: the whole screen (a dialog is a window of its own), cut to the window."""
        wait(app, lambda: False, 0.5)
        png = out / f"{name}.png"
        if screen:
            g = win.frameGeometry()
            app.primaryScreen().grabWindow(0, g.x(), g.y(), g.width(), g.height()).save(str(png))
        else:
            win.grab().save(str(png))
        small(png)
        print("saved", png, flush=True)

    # UI thread responsiveness while opening: the longest gap between timer ticks
    from PySide6.QtCore import QTimer

    ticks: list[float] = [time.monotonic()]
    gaps: list[float] = []

    def tick() -> None:
        now = time.monotonic()
        gaps.append(now - ticks[-1])
        ticks.append(now)
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(tick)

    opened: list[str] = []
    win.model_opened.connect(lambda *_: opened.append("model"))
    win.model_open_failed.connect(lambda m: opened.append(f"failed: {m}"))
    win.data_loaded.connect(lambda *_: opened.append("data"))
    win.pipeline_loaded.connect(lambda *_: opened.append("pipeline"))
    t0 = time.monotonic()
    timer.start()
    win.open_model(str(model))
    wait(app, lambda: (win.open_progress is not None and win.open_progress.value() > 0) or bool(opened), 60)
    wait(app, lambda: False, 1.0)
    shot("llm_01_open", screen=True)   # the progress dialog (only on a first open: set SLIMLINE_GGUF_CACHE)
    wait(app, lambda: any(o == "model" or o.startswith("failed") for o in opened), 900)
    timer.stop()
    print(f"open: {opened} in {time.monotonic() - t0:.1f} s; UI thread's longest stall "
          f"{max(gaps) * 1000:.0f} ms", flush=True)
    if "model" not in opened:
        return 1
    win.tabs.setCurrentIndex(TAB_INSPECT)
    wait(app, lambda: "computing" not in win.inspector.status.text(), 300)   # the depth overview filled
    shot("llm_02_layers")
    win.open_data(str(text))
    wait(app, lambda: "data" in opened, 300)
    win.open_pipeline(str(DEMO))
    wait(app, lambda: "pipeline" in opened, 30)
    win.tabs.setCurrentIndex(TAB_PIPELINE)
    form = win.editor.lm_form
    set_field(form, "window_count", args.windows)
    set_field(form, "window_length", args.window_length)
    set_field(form, "prompt_count", args.prompts)
    set_field(form, "max_new_tokens", args.new_tokens)
    lm = win.run_spec_pipeline().evaluation.lm
    print("LM settings the run gets:", lm.model_dump(), flush=True)
    wait(app, lambda: win.session.dataset is not None and win.session.dataset.count == args.windows, 120)
    print("data:", win.session.data_info, flush=True)
    win.editor.select_step("s2")
    shot("llm_03_settings")
    if args.no_run:
        win.doc.undo_stack.setClean()
        win.close()
        return 0
    status: list[str] = []
    win.run_finished.connect(status.append)
    t0 = time.monotonic()
    win.run_pipeline()
    wait(app, lambda: bool(status), 1800)
    print(f"run: {status} in {time.monotonic() - t0:.0f} s", flush=True)
    win.run_view.charts.flush()
    win.tabs.setCurrentIndex(TAB_RUN)
    shot("llm_04_run")
    win.tabs.setCurrentIndex(TAB_RESULTS)
    shot("llm_05_results")
    saved: list[str] = []
    win.report_saved.connect(saved.append)
    win.save_report(str(out / "llm_report.html"))
    wait(app, lambda: bool(saved), 600)
    print("report:", saved, flush=True)
    if saved:
        render_report(app, Path(saved[0]), out / "llm_06_report.png")
    win.doc.undo_stack.setClean()
    win.close()
    return 0 if status == ["done"] else 1


def small(png: Path) -> None:
    """A 256-colour palette PNG: a third of the size, the UI's flat colours unchanged to the eye."""
    from PIL import Image

    with Image.open(png) as im:
        im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)


def render_report(app, html: Path, png: Path) -> None:
    """The report as a page image: Qt WebEngine when installed, else QTextBrowser (tables and text, no SVG)."""
    try:
        from PySide6.QtCore import QUrl
        from PySide6.QtWebEngineWidgets import QWebEngineView
    except ImportError:
        from PySide6.QtWidgets import QTextBrowser

        view = QTextBrowser()
        view.resize(1500, 2300)   # down to the generations: the LM sections (narrower squeezes its tables)
        view.setHtml(html.read_text(encoding="utf-8"))
        view.show()
        wait(app, lambda: False, 1.0)
        view.grab().save(str(png))
        small(png)
        print("saved", png, "(QTextBrowser: charts, which are SVG, are not drawn)", flush=True)
        return
    web = QWebEngineView()
    web.resize(1400, 2400)
    done: list[bool] = []
    web.loadFinished.connect(lambda ok: done.append(ok))
    web.load(QUrl.fromLocalFile(str(html)))
    web.show()
    wait(app, lambda: bool(done), 60)
    wait(app, lambda: False, 1.0)
    web.grab().save(str(png))
    print("saved", png, flush=True)


if __name__ == "__main__":
    sys.exit(main())
