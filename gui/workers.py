"""Run slow in-process work (opening a model, stats, histograms) off the UI thread.

The UI budget is 50 ms, and opening or scanning a model can take longer, so these
calls run on QThreadPool; results come back through queued signals. Pipelines
never run here: they run in the engine's child process (slimline.core.jobs).
"""
from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal


class TaskSignals(QObject):
    """Lives in the UI thread; emitted from the worker, so delivery is queued."""

    finished = Signal(object)          # result
    failed = Signal(object, str)       # exception, formatted traceback


class Task(QRunnable):
    """One function call on the thread pool. ``signals`` must be connected before start."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.signals = TaskSignals()
        self.setAutoDelete(False)  # Python keeps the reference; Qt must not delete it under us

    def run(self) -> None:  # noqa: D401 - Qt API
        try:
            try:
                result = self.fn(*self.args, **self.kwargs)
            except BaseException as exc:  # everything reaches the window as a message
                self.signals.failed.emit(exc, traceback.format_exc())
                return
            self.signals.finished.emit(result)
        except RuntimeError:  # the receiver went away (window closed while we worked): drop the result
            pass


_live: set[Task] = set()


def run_in_thread(fn: Callable[..., Any], *args: Any,
                  on_done: Callable[[Any], None] | None = None,
                  on_error: Callable[[BaseException, str], None] | None = None,
                  **kwargs: Any) -> Task:
    """Start ``fn(*args, **kwargs)`` on the global pool; callbacks run in the UI thread."""
    task = Task(fn, *args, **kwargs)
    _live.add(task)

    def _done(result: Any) -> None:
        _live.discard(task)
        if on_done is not None:
            on_done(result)

    def _err(exc: BaseException, tb: str) -> None:
        _live.discard(task)
        if on_error is not None:
            on_error(exc, tb)

    task.signals.finished.connect(_done)
    task.signals.failed.connect(_err)
    QThreadPool.globalInstance().start(task)
    return task


def wait_all(timeout_ms: int = 30000) -> bool:
    """Block until the pool is idle (tests and shutdown only)."""
    return QThreadPool.globalInstance().waitForDone(timeout_ms)


def warm_imports() -> None:
    """Worker, shortly after the window shows: import what opening a model needs.

    Imports hold the GIL; done while the user is still looking at the start
    screen, they no longer compete with the UI thread when a model opens.
    Heavy libraries (torch, onnxruntime) are not imported here: the window's
    process never needs them (pipelines run in the child process).
    """
    import slimline.core.data  # noqa: F401
    import slimline.core.history  # noqa: F401
    import slimline.core.jobs  # noqa: F401
    import slimline.core.models  # noqa: F401
    import slimline.core.stats  # noqa: F401
    from slimline.core.registry import discover

    discover()
    if os.name == "posix":  # the first spawned job starts this helper process: do it now, not mid-run
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
