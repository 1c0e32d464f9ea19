"""Entry point of the packaged app: the same `slimline` command (GUI without arguments, CLI with).

freeze_support() must run first: pipeline jobs start child processes with the
'spawn' method, and in a frozen app the child is this very executable.

Inside the bundle ``sys.executable`` is this program, not a Python interpreter, yet code run
by the app starts ``sys.executable script.py`` (the export bundle's predict.py smoke test) or
``sys.executable -c/-m``. So, like ``python``, it also runs ``slimline SCRIPT.py [ARGS]``,
``slimline -c CODE [ARGS]`` and ``slimline -m MODULE [ARGS]`` with the bundled packages.
`slimline selfcheck` imports every module the app can reach (slimline.gui.selfcheck).
"""
import multiprocessing
import os
import sys

PYTHON_FLAGS = {"-u", "-E", "-s", "-B", "-I", "-O", "-OO", "-S"}


def run_like_python(argv: list) -> "int | None":
    """Run ``-c``/``-m``/``*.py`` arguments as python would; None when argv is a slimline command."""
    import runpy

    args = list(argv)
    while args and args[0] in PYTHON_FLAGS:
        args.pop(0)
    if len(args) >= 2 and args[0] == "-c":
        sys.argv = ["-c", *args[2:]]
        exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})  # noqa: S102 - as python -c
        return 0
    if len(args) >= 2 and args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        return 0
    if args and args[0].endswith(".py") and os.path.isfile(args[0]):
        sys.argv = list(args)
        sys.path.insert(0, os.path.dirname(os.path.abspath(args[0])))
        runpy.run_path(args[0], run_name="__main__")
        return 0
    return None


def run() -> int:
    multiprocessing.freeze_support()
    argv = sys.argv[1:]
    as_python = run_like_python(argv)
    if as_python is not None:
        return as_python
    if argv[:1] == ["selfcheck"]:  # hidden; also reachable once core/cli.py lists it
        from slimline.gui.selfcheck import main as selfcheck

        return selfcheck(argv[1:])
    from slimline.gui.launcher import main

    return main()


if __name__ == "__main__":
    sys.exit(run())
