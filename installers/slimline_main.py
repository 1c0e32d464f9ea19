"""Entry point of the packaged app: the same `slimline` command (GUI without arguments, CLI with).

freeze_support() must run first: pipeline jobs start child processes with the
'spawn' method, and in a frozen app the child is this very executable.
"""
import multiprocessing
import sys


def run() -> int:
    multiprocessing.freeze_support()
    from slimline.gui.launcher import main

    return main()


if __name__ == "__main__":
    sys.exit(run())
