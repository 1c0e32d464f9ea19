"""Drives one pipeline job from the UI thread without ever blocking it.

The job runs in the engine's child process; a QTimer polls its event queue
every 50 ms. Cheap events are coalesced per tick (only the last progress is
shown, loss points and log lines go out as one batch each), at most
MAX_HEAVY_PER_TICK chart-redrawing events are handled per tick and polling
stops after TICK_BUDGET_S, so a step that emits thousands of loss events per
second cannot stall the window or delay the end of a cancelled run.

``Job.poll`` itself runs on a small reader thread: when the run ends it joins the
child process (up to seconds while torch shuts down), which must not happen on
the UI thread. The reader only moves events into a deque; the UI timer drains it.
Starting the process happens on a worker thread because spawning a Python
interpreter can take longer than the budget.

The worker process runs at a lower CPU priority (``WORKER_NICE``): training and
latency loops keep every core busy, and on a small machine the window then
waited for CPU time — painting a chart took 3–4× its CPU time in wall time
(measured with ``bench_ui_stall --profile``). Under no contention the priority
changes nothing, so latency measured while the window is idle is unaffected.
"""
from __future__ import annotations

import collections
import os
import threading
import time
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from slimline.core.results import (
    CancelledEvent,
    DoneEvent,
    FailedEvent,
    JobEvent,
    LogEvent,
    MetricEvent,
    ProgressEvent,
    StepResult,
    StepResultEvent,
    StepStartedEvent,
)
from slimline.gui.workers import run_in_thread

POLL_MS = 50
MAX_HEAVY_PER_TICK = 4     # step_started / step_result: each redraws charts and cards
TICK_BUDGET_S = 0.015      # time spent polling + dispatching per tick
MAX_BACKLOG = 5000         # stop polling while this many events wait (memory bound)
WORKER_NICE = 10           # niceness added to the worker process (POSIX); 0 = leave it alone


def lower_priority(pid: int | None, increment: int = WORKER_NICE) -> bool:
    """Make ``pid`` (and its threads, on Linux) nicer so the UI wins the CPU; best effort."""
    if not pid or increment <= 0 or not hasattr(os, "setpriority"):
        return False
    ids = [pid]
    task_dir = f"/proc/{pid}/task"
    if os.path.isdir(task_dir):  # Linux priorities are per thread; new threads inherit from their creator
        try:
            ids = [int(t) for t in os.listdir(task_dir)]
        except OSError:
            pass
    done = False
    for tid in ids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
            done = True
        except OSError:  # exited already, or not permitted: the run still works
            pass
    return done


class RunController(QObject):
    """Signals mirror the engine's event types (DESIGN §3) and carry the typed events."""

    started = Signal(str)                          # run id
    progress_changed = Signal(float, str, float, str)  # overall, step id, step fraction, message
    step_started = Signal(object)                  # StepStartedEvent
    step_result_received = Signal(object)          # StepResult
    metrics_received = Signal(list)                # [MetricEvent, ...] per tick
    log_received = Signal(str)                     # one or more lines
    finished = Signal(str, object)                 # "done" | "failed" | "cancelled", the final event

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.job: Any = None
        self._starting = False
        self._cancel_requested = False
        self._buffer: collections.deque[JobEvent] = collections.deque()
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self._on_timer_timeout)
        self.events_seen = 0

    @property
    def running(self) -> bool:
        return self._starting or self.job is not None

    def start(self, pipeline: Any, model_path: str, *, data_path: str | None, workspace: str, trust: bool = False,
              threads: int = 0, dims: dict[str, int] | None = None, use_cache: bool = True) -> None:
        if self.running:
            raise RuntimeError("a run is already in progress")
        self._starting = True
        self._cancel_requested = False
        self._buffer = collections.deque()
        self.events_seen = 0

        def _start() -> Any:
            from slimline.core.jobs import start_pipeline_job

            job = start_pipeline_job(pipeline, model_path, data_path=data_path, workspace=workspace, trust=trust,
                                     threads=threads, dims=dims or None, use_cache=use_cache)
            lower_priority(getattr(job, "pid", None))  # right after spawn: before torch starts its threads
            return job

        run_in_thread(_start, on_done=self._on_job_started, on_error=self._on_job_start_failed)

    def cancel(self) -> None:
        """Cooperative first; the engine terminates the child after a short grace."""
        self._cancel_requested = True
        if self.job is not None:
            self.job.cancel()

    def _on_job_started(self, job: Any) -> None:
        self._starting = False
        self.job = job
        self.started.emit(str(getattr(job, "run_id", "")))
        if self._cancel_requested:
            job.cancel()
        self._reader = threading.Thread(target=self._read_events, args=(job, self._buffer), daemon=True,
                                        name="slimline-job-reader")
        self._reader.start()
        self.timer.start()

    @staticmethod
    def _read_events(job: Any, buffer: collections.deque[JobEvent]) -> None:
        """Reader thread: poll until the job has ended (deque appends are thread-safe)."""
        try:
            while job.alive:
                if len(buffer) >= MAX_BACKLOG:
                    time.sleep(0.01)
                    continue
                buffer.extend(job.poll(timeout=0.05))
        except Exception as exc:  # the queue broke: report it as a failed run
            buffer.append(FailedEvent(message=f"lost contact with the worker: {exc}", hint="run again"))

    def _on_job_start_failed(self, exc: BaseException, tb: str) -> None:
        self._starting = False
        ev = FailedEvent(message=getattr(exc, "message", f"{type(exc).__name__}: {exc}"),
                         hint=getattr(exc, "hint", "") or "see details", details=tb)
        self.finished.emit("failed", ev)

    def _on_timer_timeout(self) -> None:
        if self.job is None:
            self.timer.stop()
            return
        self._drain(time.perf_counter())

    def _drain(self, t0: float) -> None:
        """Dispatch buffered events in order, coalescing cheap ones, within the tick budget."""
        progress: ProgressEvent | None = None
        metrics: list[MetricEvent] = []
        logs: list[str] = []

        def flush() -> None:
            nonlocal progress, metrics, logs
            if progress is not None:
                self._dispatch(progress)
            if metrics:
                self.metrics_received.emit(metrics)
            if logs:
                self.log_received.emit("\n".join(logs))
            progress, metrics, logs = None, [], []

        heavy = 0
        while self._buffer:
            ev = self._buffer[0]
            if isinstance(ev, (ProgressEvent, MetricEvent, LogEvent)):
                self._buffer.popleft()
                self.events_seen += 1
                if isinstance(ev, ProgressEvent):
                    progress = ev
                elif isinstance(ev, MetricEvent):
                    metrics.append(ev)
                else:
                    logs.append(f"[{ev.step_id}] {ev.message}" if ev.step_id else ev.message)
                continue
            if heavy >= MAX_HEAVY_PER_TICK or (heavy and time.perf_counter() - t0 > TICK_BUDGET_S):
                break
            flush()
            self._buffer.popleft()
            self.events_seen += 1
            heavy += 1
            if self._dispatch(ev):
                return
        flush()

    def _dispatch(self, ev: JobEvent) -> bool:
        """Emit the right signal; True when the run has ended."""
        if isinstance(ev, ProgressEvent):
            self.progress_changed.emit(ev.overall, ev.step_id, ev.fraction, ev.message)
        elif isinstance(ev, StepStartedEvent):
            self.step_started.emit(ev)
            self.log_received.emit(f"▶ {ev.step_id}: {ev.title}")
        elif isinstance(ev, StepResultEvent):
            self._on_step_result(ev.result)
        elif isinstance(ev, (DoneEvent, FailedEvent, CancelledEvent)):
            self.timer.stop()
            self.job = None
            self._buffer = collections.deque()  # the old reader thread may still append; start clean
            if isinstance(ev, FailedEvent):
                self.log_received.emit(f"✗ run failed: {ev.message}" + (f" → {ev.hint}" if ev.hint else ""))
                if ev.details:
                    self.log_received.emit(ev.details)
            else:
                self.log_received.emit(f"■ run {ev.type}")
            self.finished.emit(ev.type, ev)
            return True
        return False

    def _on_step_result(self, res: StepResult) -> None:
        self.step_result_received.emit(res)
        flags = res.flags
        self.log_received.emit(f"✓ {res.step_id}: done" + (f" — flags: {', '.join(flags)}" if flags else ""))
        for w in res.warnings:
            self.log_received.emit(f"  ⚠ {w}")
