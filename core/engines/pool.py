"""A reusable job process: runs pipeline specs one after another, like a Ray worker.

Why not one process per variant (a plain job): a fresh interpreter imports torch and
onnxruntime again for every variant, seconds each on a small machine, which is most of
a small variant's time. A worker keeps its imports and runs the next spec; each spec
still ends with its own final event, and everything else a job guarantees holds: a
crash (segfault, kill) ends only the variant it was running, and cancel is cooperative
first, then the process is terminated. Each worker has its own queues and cancel flag,
so killing one can never leave a lock held that another worker needs.
"""
from __future__ import annotations

import multiprocessing as mp
import queue
import signal
import time
from pathlib import Path
from typing import Any

from slimline.core.results import FINAL_TYPES, CancelledEvent

_STOP = None


def _worker_main(tasks: Any, events: Any, cancel_event: Any) -> None:
    """Child: take (index, spec) from ``tasks`` until None; every event goes out as (index, event dict)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides about cancelling
    from slimline.core.jobs import capture_warnings, report_spec
    from slimline.core.plugin import CancelToken
    from slimline.core.results import event_to_dict

    current = {"index": -1}

    def emit(event: Any) -> None:
        events.put((current["index"], event_to_dict(event)))

    capture_warnings(emit)
    try:
        while True:
            item = tasks.get()
            if item is _STOP:
                break
            current["index"], spec = item
            report_spec(spec, emit, CancelToken(cancel_event))
    finally:
        events.close()
        events.join_thread()


class PoolWorker:
    """One worker process; ``submit`` a spec when ``idle``, ``poll`` its events, ``cancel``/``stop`` it."""

    def __init__(self, threads: int = 0) -> None:
        import os

        ctx = mp.get_context("spawn")  # fork is unsafe with torch threads (and Qt in the window's process)
        self._tasks = ctx.Queue()
        self._events = ctx.Queue()
        self._cancel = ctx.Event()
        self.process = ctx.Process(target=_worker_main, args=(self._tasks, self._events, self._cancel),
                                   name="slimline-variant-worker", daemon=True)
        old = os.environ.get("OMP_NUM_THREADS")
        if threads and old is None:  # the child inherits it: torch sizes its thread pools from it at import
            os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            self.process.start()
        finally:
            if threads and old is None:
                del os.environ["OMP_NUM_THREADS"]
        self.index: int | None = None        # the variant running now
        self.run_id = ""
        self.workspace = Path(".")
        self.step = ""
        self.cancel_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def idle(self) -> bool:
        return self.index is None

    def submit(self, index: int, spec: dict[str, Any]) -> None:
        self.index, self.run_id, self.workspace, self.step = index, spec["run_id"], Path(spec["workspace"]), ""
        self._tasks.put((index, spec))

    def poll(self, max_events: int = 200) -> list[tuple[int, Any]]:
        """New (index, typed event) pairs; a final event frees the worker."""
        from slimline.core.jobs import typed_event

        out: list[tuple[int, Any]] = []
        while len(out) < max_events:
            try:
                index, doc = self._events.get_nowait()
            except (queue.Empty, EOFError, OSError):
                break
            ev = typed_event(doc)
            if getattr(ev, "type", "") == "step_started":
                self.step = ev.step_id
            out.append((index, ev))
            if ev.type in FINAL_TYPES and index == self.index:
                self.index, self.cancel_at = None, None
        return out

    def crashed(self) -> tuple[int, Any] | None:
        """(index, FailedEvent) when the process died while running a variant (its events all read)."""
        from slimline.core.jobs import crash_event, mark_run

        if self.index is None or self.process.is_alive() or not self._events.empty():
            return None
        ev = crash_event(self.process.exitcode, self.step)
        index, self.index = self.index, None
        self._clean_temp()
        mark_run(self.workspace, self.run_id, ev)
        return index, ev

    def cancel(self) -> None:
        """Stop the running variant at its next boundary; ``overdue`` says when to terminate instead."""
        if self.index is not None and self.cancel_at is None:
            self._cancel.set()
            self.cancel_at = time.monotonic()

    def overdue(self, grace_s: float) -> bool:
        return self.cancel_at is not None and time.monotonic() - self.cancel_at > grace_s

    def kill(self) -> tuple[int, Any] | None:
        """Terminate now; (index, CancelledEvent) for the variant it was running, if any."""
        from slimline.core.jobs import mark_run

        self._terminate()
        if self.index is None:
            return None
        ev = CancelledEvent(forced=True)
        index, self.index = self.index, None
        self._clean_temp()
        mark_run(self.workspace, self.run_id, ev)
        return index, ev

    def stop(self, timeout: float = 5.0) -> None:
        """Ask an idle worker to exit; terminate it if it does not."""
        try:
            self._tasks.put(_STOP)
        except (OSError, ValueError):
            pass
        self.process.join(timeout)
        self._terminate()

    def _terminate(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(2)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(2)

    def _clean_temp(self) -> None:
        """Work folders a killed step left in the step cache."""
        from slimline.core.cache import StepCache

        StepCache(self.workspace / "cache").clean_temp(self.process.pid)
