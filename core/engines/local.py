"""The local engine: a pool of job processes on this machine, one variant per process, bounded by cores.

Each variant is an ordinary pipeline job (slimline.core.jobs): a spawned child that
writes its run into the workspace, streams events and can be cancelled or crash
without taking the sweep down. At most ``workers`` children run at once, each with its
share of the cores for measuring (so concurrent variants do not fight over threads).
"""
from __future__ import annotations

import collections
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimline.core.engines.base import OnEvent, cpu_count, default_workers
from slimline.core.engines.spec import VariantEvent, VariantOutcome, VariantSpec
from slimline.core.plugin import CancelToken
from slimline.core.results import (
    CancelledEvent,
    DoneEvent,
    FailedEvent,
    ProgressEvent,
    StepStartedEvent,
)

STOP_WAIT_S = 10.0   # after a cancel or an interrupt: how long to wait for the children to end


@dataclass
class _Running:
    index: int
    job: Any
    t0: float = field(default_factory=time.perf_counter)
    last_progress: float = 0.0


class LocalEngine:
    """``map`` runs the variants in child processes; see slimline.core.engines.base for the contract."""

    name = "local"

    def __init__(self, workers: int | None = None, poll_s: float = 0.05) -> None:
        self.workers = workers
        self.poll_s = poll_s

    def describe(self) -> str:
        return f"local process pool ({self.workers or f'up to {cpu_count()}'} workers)"

    def map(self, specs: Sequence[VariantSpec], *, workspace: Path, on_event: OnEvent | None = None,
            cancel: CancelToken | None = None) -> list[VariantOutcome]:
        from slimline.core.history import new_run_id
        from slimline.core.jobs import Job

        emit: OnEvent = on_event or (lambda _e: None)
        workspace = Path(workspace)
        workers = self.workers or default_workers(len(specs))
        threads = max(1, cpu_count() // workers)
        queue = collections.deque(range(len(specs)))
        running: dict[int, _Running] = {}
        outcomes: dict[int, VariantOutcome] = {}
        for i in queue:
            emit(VariantEvent(kind="queued", index=i, label=specs[i].title))

        def finish(i: int, outcome: VariantOutcome) -> None:
            outcomes[i] = outcome
            emit(VariantEvent(kind="finished", index=i, label=outcome.label, worker=outcome.worker,
                              fraction=1.0, outcome=outcome, message=outcome.reason or outcome.status))

        try:
            while queue or running:
                if cancel is not None and cancel.cancelled:
                    while queue:
                        i = queue.popleft()
                        finish(i, _outcome(specs[i], i, "cancelled", reason="cancelled before it started"))
                    for r in running.values():
                        r.job.cancel()
                while queue and len(running) < workers:
                    i = queue.popleft()
                    job = Job(specs[i].job_spec(workspace=str(workspace), run_id=new_run_id(), threads=threads))
                    running[i] = _Running(i, job)
                    emit(VariantEvent(kind="started", index=i, label=specs[i].title, pid=job.pid,
                                      worker=f"local pid {job.pid}"))
                busy = False
                for i, r in list(running.items()):
                    for ev in r.job.poll(timeout=0):
                        busy = True
                        self._handle(specs[i], r, ev, workspace, emit, finish)
                    if not r.job.alive:
                        running.pop(i)
                if not busy:
                    time.sleep(self.poll_s)
        except BaseException:  # Ctrl-C, SystemExit (terminated): no child outlives the sweep
            _stop(running)
            raise
        return [outcomes[i] for i in range(len(specs))]

    def _handle(self, spec: VariantSpec, r: _Running, ev: Any, workspace: Path, emit: OnEvent,
                finish: Any) -> None:
        worker = f"local pid {r.job.pid}"
        if isinstance(ev, (ProgressEvent, StepStartedEvent)):
            now = time.perf_counter()
            if isinstance(ev, ProgressEvent) and now - r.last_progress < 0.25:
                return
            r.last_progress = now
            fraction = ev.overall if isinstance(ev, ProgressEvent) else ev.index / max(ev.total, 1)
            msg = f"{ev.step_id}: {ev.message}" if isinstance(ev, ProgressEvent) else f"{ev.step_id}: {ev.title}"
            emit(VariantEvent(kind="progress", index=r.index, label=spec.title, fraction=fraction, message=msg,
                              worker=worker, pid=r.job.pid))
            return
        if not isinstance(ev, (DoneEvent, FailedEvent, CancelledEvent)):
            return
        record = _load_record(workspace, r.job.run_id)
        wall = time.perf_counter() - r.t0
        if isinstance(ev, DoneEvent):
            status = record.status if record is not None and record.status in ("done", "failed") else "done"
            finish(r.index, _outcome(spec, r.index, status, record=record, wall_s=wall, worker=worker,
                                     run_id=r.job.run_id))
        elif isinstance(ev, FailedEvent):
            where = ev.subject or (f"step {ev.step_id}" if ev.step_id else "")
            finish(r.index, _outcome(spec, r.index, "failed", record=record, wall_s=wall, worker=worker,
                                     run_id=r.job.run_id, reason=f"{where + ': ' if where else ''}{ev.message}",
                                     hint=ev.hint))
        else:
            finish(r.index, _outcome(spec, r.index, "cancelled", record=record, wall_s=wall, worker=worker,
                                     run_id=r.job.run_id, reason="cancelled"))


def _outcome(spec: VariantSpec, index: int, status: str, **fields: Any) -> VariantOutcome:
    return VariantOutcome(index=index, label=spec.title, settings=dict(spec.settings), status=status,
                          engine="local", **fields)


def _load_record(workspace: Path, run_id: str) -> Any:
    from slimline.core.history import load_run, run_dir

    try:
        return load_run(run_dir(workspace, run_id))
    except (OSError, ValueError):
        return None


def _stop(running: dict[int, _Running]) -> None:
    """Cancel every running child and wait until each has ended (Job terminates after its grace)."""
    for r in running.values():
        r.job.cancel()
    deadline = time.monotonic() + STOP_WAIT_S
    while time.monotonic() < deadline and any(r.job.alive for r in running.values()):
        for r in running.values():
            if r.job.alive:
                r.job.poll(timeout=0.02)  # terminates the child once the cancel grace has passed
