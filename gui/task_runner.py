"""Drive one engine task job (slimline.core.jobs.start_task_job) from the UI thread, never blocking it.

Starting a child interpreter can take longer than the UI budget, so the start runs on the thread
pool; a QTimer then polls the job's events and re-emits them as signals. Used by the sensitivity
panel (analysis, budgeted search) and the Compare tab (model diff).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from slimline.core.results import CancelledEvent, DoneEvent, FailedEvent, MetricEvent, ProgressEvent
from slimline.gui.messages import UserMessage
from slimline.gui.workers import run_in_thread

POLL_MS = 80


class TaskRunner(QObject):
    """Signals: ``progress(fraction, message)``, ``metric(MetricEvent)``, ``done(result dict)``,
    ``failed(UserMessage)``, ``cancelled()``, ``running_changed(bool)``."""

    progress = Signal(float, str)
    metric = Signal(object)
    done = Signal(object)
    failed = Signal(object)
    cancelled = Signal()
    running_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.job: Any = None
        self._starting = False
        self._cancel = False
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self._on_timer_timeout)

    @property
    def running(self) -> bool:
        return self._starting or self.job is not None

    def start(self, starter: Callable[[], Any]) -> bool:
        """``starter()`` returns a started job (called on a worker thread); False if one is running."""
        if self.running:
            return False
        self._starting, self._cancel = True, False
        self.running_changed.emit(True)
        run_in_thread(starter, on_done=self._on_started, on_error=self._on_start_failed)
        return True

    def cancel(self) -> None:
        self._cancel = True
        if self.job is not None:
            self.job.cancel()

    def _on_started(self, job: Any) -> None:
        self._starting = False
        self.job = job
        if self._cancel:
            job.cancel()
        self.timer.start()

    def _on_start_failed(self, exc: BaseException, tb: str) -> None:
        self._starting = False
        self.running_changed.emit(False)
        self.failed.emit(UserMessage(getattr(exc, "message", f"{type(exc).__name__}: {exc}"),
                                     getattr(exc, "hint", "") or "see details", details=tb))

    def _on_timer_timeout(self) -> None:
        if self.job is None:
            self.timer.stop()
            return
        last_progress: ProgressEvent | None = None
        for ev in self.job.poll(max_events=100):
            if isinstance(ev, ProgressEvent):
                last_progress = ev
            elif isinstance(ev, MetricEvent):
                self.metric.emit(ev)
            elif isinstance(ev, (DoneEvent, FailedEvent, CancelledEvent)):
                self._end(ev)
                return
        if last_progress is not None:
            self.progress.emit(last_progress.overall, last_progress.message)

    def _end(self, ev: Any) -> None:
        self.timer.stop()
        self.job = None
        self.running_changed.emit(False)
        if isinstance(ev, DoneEvent):
            self.done.emit(ev.result or {})
        elif isinstance(ev, FailedEvent):
            self.failed.emit(UserMessage(ev.message or "the job failed", ev.hint, subject=ev.subject,
                                         details=ev.details or ""))
        else:
            self.cancelled.emit()
