"""Long work runs in a child process that streams events back.

Why a process and not a thread: a runtime that crashes on a hostile model
must not take the window with it; cancel must really stop C++ work
(terminate the child) and leave nothing half-written; Python-heavy loops must
not starve the UI thread of the GIL. The CLI uses the same runner.

Events are typed (slimline.core.results); they cross the process pipe as dicts
(event_to_dict / event_from_dict) and :meth:`Job.poll` hands them on typed: to the
GUI's Qt signals, the CLI and the tests.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
import traceback
from pathlib import Path
from typing import Any

from slimline.core.history import load_run, new_run_id, run_dir, save_run
from slimline.core.pipeline import Pipeline
from slimline.core.results import (
    FINAL_TYPES,
    CancelledEvent,
    DoneEvent,
    FailedEvent,
    FinalEvent,
    JobEvent,
    LogEvent,
    RunError,
    RunSummary,
    StepStartedEvent,
    event_from_dict,
    event_to_dict,
)

_EXIT = {"type": "_exit"}  # pipe sentinel after the last event (not an event)

CANCEL_GRACE_S = 0.5  # cooperative cancel first, then terminate


def run_spec_inline(spec: dict[str, Any], emit: Any, cancel: Any) -> Any:
    """Run one job spec (see :func:`start_pipeline_job`) in this process; returns the RunRecord.

    The body of every pipeline job: the job's child process calls it, and so does a Ray
    worker running a sweep variant (slimline.core.engines), so both run a spec the same way.
    """
    from slimline.core.models import open_model
    from slimline.core.pipeline import parse_pipeline
    from slimline.core.runner import load_data, run_pipeline

    emit(LogEvent(message=f"worker {os.getpid()} opening {spec['model_path']}"))
    pipeline = parse_pipeline(spec["pipeline"])
    model = open_model(spec["model_path"], trust=spec.get("trust", False))
    if spec.get("dims"):
        model = model.with_dims(**spec["dims"])
    data = load_data(pipeline, model, spec.get("data_path"), spec.get("train_path"))
    return run_pipeline(pipeline, model, workspace=Path(spec["workspace"]), emit=emit, cancel=cancel, data=data,
                        run_id=spec["run_id"], threads=spec.get("threads", 0), use_cache=spec.get("use_cache", True),
                        data_paths=(spec.get("data_path") or pipeline.evaluation.data,
                                    spec.get("train_path") or pipeline.evaluation.train_data))


def capture_warnings(emit: Any) -> None:
    """Library warnings go to the run's log (as LogEvents), not to the terminal that started the app."""
    import warnings

    def show_warning(message: Any, category: type, filename: str, lineno: int,
                     file: Any = None, line: Any = None) -> None:
        emit(LogEvent(level="warning", message=f"{category.__name__}: {message}"))

    warnings.showwarning = show_warning


def report_spec(spec: dict[str, Any], emit: Any, cancel: Any) -> None:
    """Run one spec and end with its final event (done, failed or cancelled); never raises.

    Shared by the one-run job child and the local engine's reusable worker processes.
    """
    from slimline.core.errors import Cancelled, SlimlineError

    try:
        record = run_spec_inline(spec, emit, cancel)
        emit(DoneEvent(run=RunSummary(run_id=record.run_id, status=record.status)))
    except Cancelled:
        emit(CancelledEvent())
    except SlimlineError as exc:
        emit(FailedEvent(**{**exc.to_dict(), "step_id": getattr(exc, "step_id", ""),
                            "details": getattr(exc, "details", "") or traceback.format_exc()}))
    except BaseException as exc:  # never die silently: the parent shows this with details
        emit(FailedEvent(message=f"{type(exc).__name__}: {exc}", hint="see details", subject="", step_id="",
                         details=traceback.format_exc()))


def _child_main(spec: dict[str, Any], events: Any, cancel_event: Any) -> None:
    """Entry point of the worker process: run the pipeline, report everything as events."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides about cancelling
    from slimline.core.plugin import CancelToken

    def emit(event: Any) -> None:
        events.put(event_to_dict(event))
        if isinstance(event, StepStartedEvent):
            _flush(events)

    capture_warnings(emit)
    try:
        if spec.get("threads"):
            os.environ.setdefault("OMP_NUM_THREADS", str(spec["threads"]))
        report_spec(spec, emit, CancelToken(cancel_event))
    finally:
        events.put(_EXIT)
        events.close()
        events.join_thread()


def _flush(events: Any, limit_s: float = 1.0) -> None:
    """Let the queue's feeder thread send what was put before going on.

    A step that crashes the process (a segfaulting runtime) right after its "started" event would
    otherwise lose that event in the feeder's buffer, and the crash would be blamed on the step before.
    """
    end = time.monotonic() + limit_s
    while getattr(events, "_buffer", None) and time.monotonic() < end:
        time.sleep(0.001)
    time.sleep(0.005)  # the feeder has taken the event off its buffer; give it the moment to write it


class Job:
    """Handle on a running worker. ``poll()`` is non-blocking; call it from a timer."""

    def __init__(self, spec: dict[str, Any]) -> None:
        ctx = mp.get_context("spawn")  # fork is unsafe with Qt and torch threads
        self.spec = spec
        self.run_id: str = spec["run_id"]
        self.workspace = Path(spec["workspace"])
        self._events = ctx.Queue()
        self._cancel = ctx.Event()
        self._process = ctx.Process(target=_child_main, args=(spec, self._events, self._cancel),
                                    name=f"slimline-job-{self.run_id}", daemon=True)
        self._cancel_at: float | None = None
        self._final: FinalEvent | None = None  # the DoneEvent / FailedEvent / CancelledEvent that ended the job
        self._step = ""  # the step running now (from step_started), named if the worker crashes
        self._process.start()

    @property
    def alive(self) -> bool:
        return self._final is None

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def cancel(self) -> None:
        """Ask the step to stop at its next boundary; terminate after a short grace."""
        if self._final is None and self._cancel_at is None:
            self._cancel.set()
            self._cancel_at = time.monotonic()

    def poll(self, timeout: float = 0.0, max_events: int = 200) -> list[JobEvent]:
        """New typed events (slimline.core.results.JobEvent), the last one final when the job ended."""
        out: list[JobEvent] = []
        if self._final is not None:
            return out
        if self._cancel_at is not None and time.monotonic() - self._cancel_at > CANCEL_GRACE_S:
            self._terminate()  # checked first so an event flood cannot postpone the stop
            return [self._finish(CancelledEvent(forced=True))]
        deadline = time.monotonic() + timeout
        while len(out) < max_events:
            try:
                wait = max(0.0, deadline - time.monotonic())
                ev = self._events.get(timeout=wait) if wait > 0 else self._events.get_nowait()
            except queue.Empty:
                break
            except (EOFError, OSError):
                break
            if ev == _EXIT:
                continue
            ev = typed_event(ev)
            if isinstance(ev, StepStartedEvent):
                self._step = ev.step_id
            out.append(ev)
            if ev.type in FINAL_TYPES:
                self._finish(ev)
                return out
        if self._final is None:
            if self._cancel_at is not None and time.monotonic() - self._cancel_at > CANCEL_GRACE_S:
                self._terminate()
                out.append(self._finish(CancelledEvent(forced=True)))
            elif not self._process.is_alive() and self._events.empty():
                code = self._process.exitcode
                out.append(self._finish(crash_event(code, self._step)))
        return out

    def wait(self, timeout: float | None = None) -> list[JobEvent]:
        """Block until the job ends (CLI, tests); returns every event."""
        events: list[JobEvent] = []
        end = None if timeout is None else time.monotonic() + timeout
        while self.alive:
            events += self.poll(timeout=0.1)
            if end is not None and time.monotonic() > end:
                self.cancel()
        return events

    def _terminate(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(2)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(2)

    def _finish(self, event: Any) -> Any:
        """Record the end. Never blocks for long: poll() runs on UI timers."""
        self._final = event
        self._process.join(0.05)  # the child exits right after its last event
        from slimline.core.cache import StepCache

        StepCache(self.workspace / "cache").clean_temp(self._process.pid)
        if event.type in ("cancelled", "failed"):
            mark_run(self.workspace, self.run_id, event)
        return event


def typed_event(doc: Any) -> Any:
    """The typed event for a dict from the pipe; a malformed one is logged, never fatal."""
    try:
        return event_from_dict(doc)
    except ValueError:
        return LogEvent(level="warning", message=f"unreadable event from the worker: {str(doc)[:300]}")


def crash_event(code: int | None, step_id: str = "") -> FailedEvent:
    sig = ""
    if code is not None and code < 0:
        try:
            sig = f" ({signal.Signals(-code).name})"
        except ValueError:
            sig = ""
    during = f" during step {step_id}" if step_id else ""
    return FailedEvent(message=f"the worker process crashed{during} (exit code {code}{sig})",
                       hint="the model or a runtime library crashed; the app is fine — check the log, "
                            "try another runtime/provider or report the model",
                       subject=f"step {step_id}" if step_id else "worker", step_id=step_id)


def mark_run(workspace: Path, run_id: str, event: Any) -> None:
    """Record how the run ended even when the child could not (killed, crashed)."""
    path = run_dir(workspace, run_id) / "run.json"
    try:
        record = load_run(path)
    except (OSError, ValueError):
        return
    if record.status == "running":
        record.status = "cancelled" if isinstance(event, CancelledEvent) else "failed"
        if isinstance(event, FailedEvent):
            record.error = RunError(message=event.message, hint=event.hint, subject=event.subject,
                                    step_id=event.step_id)
        save_run(workspace, record)


def start_pipeline_job(pipeline: Pipeline | dict[str, Any], model_path: str | Path, *,
                       data_path: str | None = None, train_path: str | None = None,
                       workspace: str | Path, trust: bool = False, threads: int = 0,
                       use_cache: bool = True, dims: dict[str, int] | None = None) -> Job:
    """Start a pipeline run in a child process."""
    doc = pipeline.model_dump(mode="json") if isinstance(pipeline, Pipeline) else pipeline
    spec = {"pipeline": doc, "model_path": str(model_path), "data_path": data_path,
            "train_path": train_path, "workspace": str(workspace), "trust": trust,
            "threads": threads, "use_cache": use_cache, "run_id": new_run_id(), "dims": dims or {}}
    return Job(spec)


# --- generic tasks: any Qt-free function, run like a pipeline job (export, report) -----------------
def _task_child_main(target: str, spec: dict[str, Any], events: Any, cancel_event: Any) -> None:
    """Child entry of ``start_task_job``: ``module:function(spec, emit, cancel)``; its result ends the job."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import importlib

    from slimline.core.errors import Cancelled
    from slimline.core.plugin import CancelToken

    try:
        module, _, name = target.partition(":")
        fn = getattr(importlib.import_module(module), name)
        result = fn(spec, events.put, CancelToken(cancel_event))
        events.put({"type": "done", "result": result})
    except Cancelled:
        events.put({"type": "cancelled"})
    except BaseException as exc:  # every failure reaches the parent as an event, never a silent death
        events.put({"type": "failed", "message": getattr(exc, "message", "") or f"{type(exc).__name__}: {exc}",
                    "hint": getattr(exc, "hint", "") or "", "subject": getattr(exc, "subject", "") or "",
                    "step_id": "", "error_type": type(exc).__name__, "details": traceback.format_exc()})
    finally:
        events.put({"type": "_exit"})
        events.close()
        events.join_thread()


class TaskJob(Job):
    """A ``Job`` whose child runs one function instead of a pipeline (same poll/cancel/crash handling)."""

    def __init__(self, target: str, spec: dict[str, Any], grace_s: float = CANCEL_GRACE_S) -> None:
        ctx = mp.get_context("spawn")
        self.spec = spec
        self.run_id = str(spec.get("run_id", ""))
        self.workspace = Path(spec.get("workspace") or ".")
        self.grace_s = grace_s
        self._events = ctx.Queue()
        self._cancel = ctx.Event()
        self._process = ctx.Process(target=_task_child_main, args=(target, spec, self._events, self._cancel),
                                    name=f"slimline-task-{target.rpartition(':')[2]}", daemon=True)
        self._cancel_at = None
        self._final = None
        self._step = ""
        self._process.start()

    def cancel(self) -> None:
        """Cooperative first; terminate only after ``grace_s`` (an export cleans its staging folder)."""
        if self._final is None and self._cancel_at is None:
            self._cancel.set()
            self._cancel_at = time.monotonic() + max(0.0, self.grace_s - CANCEL_GRACE_S)

    def _finish(self, event: Any) -> Any:
        self._final = event
        self._process.join(0.05)
        return event


def start_task_job(target: str, spec: dict[str, Any], *, grace_s: float = CANCEL_GRACE_S) -> TaskJob:
    """Run ``target`` ("package.module:function", called as ``fn(spec, emit, cancel)``) in a child process.

    ``emit(event_dict)`` streams events (e.g. progress) to ``poll()``; the returned value (picklable) comes
    back as ``DoneEvent.result``; exceptions as ``FailedEvent`` with an extra ``error_type``.
    """
    return TaskJob(target, spec, grace_s=grace_s)
