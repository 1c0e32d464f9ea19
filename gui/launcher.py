"""The `slimline` command: no arguments (or a model path, or --demo) opens the window; a subcommand runs headless.

It lives outside the engine because it may start the GUI, and slimline.core never
imports slimline.gui. It must stay import-light: no Qt at module level, so that
`slimline --help` and `slimline plugins` never load PySide6, torch or onnxruntime
(tests/core/test_imports.py checks this). The headless subcommands are the engine's
(slimline.core.cli); this module only adds `gui`.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from slimline.core.cli import Subcommand, command_names, run

NO_DISPLAY = "No display found. Headless use: `slimline run --demo` or `slimline --help`."


def _add_gui(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("gui", help="open the desktop app")
    g.add_argument("model", nargs="?", help="model file or folder to open")
    g.add_argument("--demo", action="store_true", help="open the bundled demo model")
    g.add_argument("--pipeline", help="pipeline .json to load")


def _cmd_gui(args: argparse.Namespace) -> int:
    return open_gui(model=args.model, demo=args.demo, pipeline=args.pipeline)


GUI = Subcommand("gui", _add_gui, _cmd_gui)


def _add_selfcheck(sub: argparse._SubParsersAction) -> None:
    from slimline.gui import selfcheck

    selfcheck.add_parser(sub)


def _cmd_selfcheck(args: argparse.Namespace) -> int:
    from slimline.gui import selfcheck

    return selfcheck.cmd_selfcheck(args)


# App-level commands: the engine's CLI knows nothing of the window or of the packaged app's module list.
APP_COMMANDS = (GUI, Subcommand("selfcheck", _add_selfcheck, _cmd_selfcheck))


def wants_gui(argv: Sequence[str]) -> bool:
    """No arguments, `--demo`, or a first argument that is not a subcommand or an option (a model path)."""
    if not argv or list(argv) == ["--demo"]:
        return True
    first = argv[0]
    return not first.startswith("-") and first not in command_names(APP_COMMANDS)


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or os.environ.get("QT_QPA_PLATFORM") in ("offscreen", "minimal", "vnc")
                or sys.platform in ("win32", "darwin"))


def open_gui(model: str | None = None, demo: bool = False, pipeline: str | None = None) -> int:
    """Start the desktop app (Qt is imported only here)."""
    if not has_display():
        print(NO_DISPLAY, file=sys.stderr)
        return 2
    from slimline.gui.app import main as gui_main

    return gui_main(model=model, demo=demo, pipeline=pipeline)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of `slimline` (pyproject [project.scripts] and the packaged app)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if wants_gui(args):
        return open_gui(model=args[0] if args and args[0] != "--demo" else None, demo="--demo" in args)
    return run(args, extra=APP_COMMANDS)


if __name__ == "__main__":  # python -m slimline.gui.launcher [ARGS]
    sys.exit(main())
