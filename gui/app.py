"""Entry point of the desktop app (``slimline`` with no subcommand, ``slimline MODEL``, ``slimline --demo``)."""
from __future__ import annotations

import os
import sys
import time
from typing import cast

SWITCH_INTERVAL_S = 0.001


def tune_interpreter() -> None:
    """Let the UI thread get the GIL back within 1 ms (Python's default: 5 ms).

    Worker threads (model opening, statistics, histograms) run Python while the UI
    paints; PySide releases the GIL around Qt calls, and each time the UI thread
    wants it back it waited up to a full switch interval — a 10 ms paint took 50+ ms.
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def main(argv: list[str] | None = None, model: str | None = None, demo: bool = False,
         pipeline: str | None = None) -> int:
    """Create the application and the main window; returns the exit code."""
    from PySide6.QtWidgets import QApplication

    from slimline.gui import settings as st
    from slimline.gui.main_window import MainWindow
    from slimline.gui.theme import apply_theme

    tune_interpreter()
    app = cast(QApplication, QApplication.instance() or QApplication(list(argv) if argv is not None else sys.argv[:1]))
    app.setOrganizationName(st.ORG)
    app.setApplicationName(st.APP)
    apply_theme(app, st.Preferences.load().theme)
    win = MainWindow()
    win.show()
    if os.environ.get("SLIMLINE_EXIT_AFTER_SHOW"):  # benchmarks/bench_tool_speed: time to a shown window
        from PySide6.QtCore import QTimer

        def _shown() -> None:
            print(f"SLIMLINE_SHOWN {time.time():.6f}", file=sys.stderr, flush=True)
            app.quit()
        QTimer.singleShot(0, _shown)
        return int(app.exec())
    if pipeline:
        win.open_pipeline(pipeline)
    if demo:
        win.open_demo()
    elif model:
        win.open_path(model)
    return int(app.exec())


if __name__ == "__main__":  # python -m slimline.gui.app [MODEL]
    args = sys.argv[1:]
    sys.exit(main(sys.argv[:1], model=args[0] if args and args[0] != "--demo" else None,
                  demo="--demo" in args))
