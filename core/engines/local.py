"""The local engine: a pool of worker processes on this machine, bounded by cores.

Each worker (slimline.core.engines.pool) runs one variant at a time and keeps its
imports for the next, as Ray's workers do; every variant is an ordinary pipeline run
that writes itself into the workspace. At most ``workers`` variants run at once, each
with its share of the cores for measuring, so concurrent variants do not fight over
threads. A worker that crashes fails only its variant; a new worker takes the next one.
"""
from __future__ import annotations

import collections
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slimline.core.engines.base import OnEvent, cpu_count, default_workers
from slimline.core.engines.spec import VariantEvent, VariantOutcome, VariantSpec
from slimline.core.plugin import CancelToken
from slimline.core.results import CancelledEvent, DoneEvent, FailedEvent, ProgressEvent, StepStartedEvent

CANCEL_GRACE_S = 0.5     # cooperative cancel first, then the worker is terminated
PROGRESS_EVERY_S = 0.25  # variant progress news at most this often per variant


class LocalEngine:
    """``map`` runs the variants in a process pool; see slimline.core.engines.base for the contract."""

    name = "local"

    def __init__(self, workers: int | None = None, poll_s: float = 0.05) -> None:
        self.workers = workers
        self.poll_s = poll_s

    def describe(self) -> str:
        return f"local process pool ({self.workers or f'up to {cpu_count()}'} workers)"

    def map(self, specs: Sequence[VariantSpec], *, workspace: Path, on_event: OnEvent | None = None,
            cancel: CancelToken | None = None) -> list[VariantOutcome]:
        return _Run(self, list(specs), Path(workspace), on_event or (lambda _e: None), cancel).run()


class _Run:
    """One ``map`` call: hand variants to idle workers, turn their events into outcomes."""

    def __init__(self, engine: LocalEngine, specs: list[VariantSpec], workspace: Path, emit: OnEvent,
                 cancel: CancelToken | None) -> None:
        self.engine, self.specs, self.workspace, self.emit, self.cancel = engine, specs, workspace, emit, cancel
        self.n_workers = engine.workers or default_workers(len(specs))
        self.threads = max(1, cpu_count() // self.n_workers)
        self.outcomes: dict[int, VariantOutcome] = {}
        self.t0: dict[int, float] = {}
        self.last_progress: dict[int, float] = {}
        self.run_ids: dict[int, str] = {}
        self.workers: list[Any] = []

    def run(self) -> list[VariantOutcome]:
        from slimline.core.engines.pool import PoolWorker
        from slimline.core.history import new_run_id

        queue = collections.deque(range(len(self.specs)))
        for i in queue:
            self.emit(VariantEvent(kind="queued", index=i, label=self.specs[i].title))
        try:
            while queue or any(not w.idle for w in self.workers):
                if self.cancel is not None and self.cancel.cancelled:
                    while queue:
                        i = queue.popleft()
                        self._finish(i, "cancelled", reason="cancelled before it started")
                    for w in self.workers:
                        w.cancel()
                for w in [w for w in self.workers if not w.idle and w.overdue(CANCEL_GRACE_S)]:
                    self._final(w, w.kill())
                self.workers = [w for w in self.workers if w.process.is_alive() or not w.idle]
                while queue and (any(w.idle for w in self.workers) or len(self.workers) < self.n_workers):
                    w = next((w for w in self.workers if w.idle), None)
                    if w is None:
                        w = PoolWorker(threads=self.threads)
                        self.workers.append(w)
                    i = queue.popleft()
                    self.run_ids[i] = new_run_id()
                    self.t0[i] = time.perf_counter()
                    w.submit(i, self.specs[i].job_spec(workspace=str(self.workspace), run_id=self.run_ids[i],
                                                       threads=self.threads))
                    self.emit(VariantEvent(kind="started", index=i, label=self.specs[i].title, pid=w.pid,
                                           worker=self._where(w)))
                busy = False
                for w in self.workers:
                    for i, ev in w.poll():
                        busy = True
                        self._handle(w, i, ev)
                    self._final(w, w.crashed())
                if not busy:
                    time.sleep(self.engine.poll_s)
        except BaseException:  # Ctrl-C, SystemExit (terminated): no worker outlives the sweep
            self._stop_all(graceful=False)
            raise
        self._stop_all(graceful=True)
        return [self.outcomes[i] for i in range(len(self.specs))]

    @staticmethod
    def _where(w: Any) -> str:
        return f"local pid {w.pid}"

    def _handle(self, w: Any, i: int, ev: Any) -> None:
        if isinstance(ev, (ProgressEvent, StepStartedEvent)):
            now = time.perf_counter()
            if isinstance(ev, ProgressEvent) and now - self.last_progress.get(i, 0.0) < PROGRESS_EVERY_S:
                return
            self.last_progress[i] = now
            if isinstance(ev, ProgressEvent):
                fraction, msg = ev.overall, f"{ev.step_id}: {ev.message}"
            else:
                fraction, msg = ev.index / max(ev.total, 1), f"{ev.step_id}: {ev.title}"
            self.emit(VariantEvent(kind="progress", index=i, label=self.specs[i].title, fraction=fraction,
                                   message=msg, worker=self._where(w), pid=w.pid))
        elif isinstance(ev, (DoneEvent, FailedEvent, CancelledEvent)):
            self._final(w, (i, ev))

    def _final(self, w: Any, item: tuple[int, Any] | None) -> None:
        if item is None:
            return
        i, ev = item
        record = _load_record(self.workspace, self.run_ids.get(i, ""))
        common = {"record": record, "worker": self._where(w), "run_id": self.run_ids.get(i, "")}
        if isinstance(ev, DoneEvent):
            status = record.status if record is not None and record.status in ("done", "failed") else "done"
            self._finish(i, status, **common)
        elif isinstance(ev, FailedEvent):
            where = ev.subject or (f"step {ev.step_id}" if ev.step_id else "")
            self._finish(i, "failed", reason=f"{where + ': ' if where else ''}{ev.message}", hint=ev.hint, **common)
        else:
            self._finish(i, "cancelled", reason="cancelled", **common)

    def _finish(self, i: int, status: str, **fields: Any) -> None:
        if i in self.outcomes:
            return
        spec = self.specs[i]
        wall = time.perf_counter() - self.t0[i] if i in self.t0 else 0.0
        outcome = VariantOutcome(index=i, label=spec.title, settings=dict(spec.settings), status=status,
                                 wall_s=wall, engine="local", **fields)
        self.outcomes[i] = outcome
        self.emit(VariantEvent(kind="finished", index=i, label=outcome.label, worker=outcome.worker, fraction=1.0,
                               outcome=outcome, message=outcome.reason or outcome.status))

    def _stop_all(self, graceful: bool) -> None:
        """End every worker; a variant still running is cancelled (cooperatively first when graceful)."""
        busy = [w for w in self.workers if not w.idle]
        for w in busy:
            w.cancel()
        deadline = time.monotonic() + (5.0 if graceful else CANCEL_GRACE_S)
        while busy and time.monotonic() < deadline:
            for w in busy:
                for i, ev in w.poll():
                    if isinstance(ev, (DoneEvent, FailedEvent, CancelledEvent)):
                        self._final(w, (i, ev))
                self._final(w, w.crashed())
            busy = [w for w in busy if not w.idle]
            time.sleep(0.02)
        for w in self.workers:
            self._final(w, w.kill() if not w.idle else None)
            w.stop(timeout=2.0)
        self.workers = []


def _load_record(workspace: Path, run_id: str) -> Any:
    from slimline.core.history import load_run, run_dir

    if not run_id:
        return None
    try:
        return load_run(run_dir(workspace, run_id))
    except (OSError, ValueError):
        return None
