"""A sweep: every combination of a grid of step settings, run as its own run by an engine.

The CLI (``slimline sweep``) calls :func:`run_sweep` in its own process; the window
runs the same function in a job child (:func:`sweep_task`, through
``slimline.core.jobs.start_task_job``) so the UI never waits on it. Every variant is a
run in the workspace history; the sweep itself is summarised in
``workspace/sweeps/<sweep_id>.json`` (grid, engine, outcome per variant, wall time).
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from slimline.core.engines.base import OnEvent, get_engine
from slimline.core.engines.grid import GridAxis, expand, parse_grid, parse_settings
from slimline.core.engines.spec import VariantEvent, VariantOutcome, VariantSpec, apply_settings
from slimline.core.fsutil import atomic_write_text
from slimline.core.pipeline import Pipeline
from slimline.core.plugin import CancelToken

SWEEP_KIND = "variant"     # MetricEvent.kind of variant news on a job's event pipe
SWEEP_STEP = "sweep"       # MetricEvent.step_id of variant news


class SweepRequest(BaseModel):
    """Everything ``slimline sweep`` and the sweep dialog ask for (JSON, so it crosses the job pipe)."""

    pipeline: Pipeline
    model_path: str
    data_path: str | None = None
    train_path: str | None = None
    grid: list[str] = Field(default_factory=list)        # "STEP.PARAM=V1,V2" entries
    fixed: list[str] = Field(default_factory=list)       # "STEP.PARAM=VALUE" for every variant
    evaluation: dict[str, Any] = Field(default_factory=dict)
    engine: str = "local"
    address: str | None = None
    workers: int | None = None
    shared_dir: str | None = None
    workspace: str
    trust: bool = False
    threads: int = 0
    use_cache: bool = True
    dims: dict[str, int] = Field(default_factory=dict)
    num_cpus: float = 1.0


class SweepRecord(BaseModel):
    """``workspace/sweeps/<sweep_id>.json``: what was swept, where, and how each variant ended."""

    sweep_id: str
    created: str
    engine: str
    engine_description: str
    pipeline_name: str
    model_path: str
    axes: dict[str, list[Any]]
    fixed: dict[str, Any] = Field(default_factory=dict)
    status: str = "done"                  # done (every variant ended) | cancelled
    wall_s: float = 0.0
    outcomes: list[VariantOutcome] = Field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The record without the embedded run records (they are in runs/ already)."""
        return self.model_dump(mode="json", exclude={"outcomes": {"__all__": {"record"}}})


def build_specs(req: SweepRequest) -> tuple[list[GridAxis], dict[str, Any], list[VariantSpec]]:
    """Grid axes, fixed settings and one VariantSpec per combination (GridError on a bad entry)."""
    fixed = parse_settings(req.pipeline, req.fixed)
    pipeline = apply_settings(req.pipeline, fixed)
    axes = parse_grid(pipeline, req.grid)
    base = VariantSpec(pipeline=pipeline, model_path=req.model_path, data_path=req.data_path,
                       train_path=req.train_path, evaluation=req.evaluation, trust=req.trust, dims=req.dims,
                       threads=req.threads, use_cache=req.use_cache, num_cpus=req.num_cpus)
    return axes, fixed, expand(base, axes)


def run_sweep(req: SweepRequest, *, on_event: OnEvent | None = None, cancel: CancelToken | None = None,
              specs: list[VariantSpec] | None = None) -> SweepRecord:
    """Run every variant with the requested engine; the record is also saved in the workspace."""
    axes, fixed, built = build_specs(req)
    specs = specs if specs is not None else built
    engine = get_engine(req.engine, workers=req.workers, address=req.address, shared_dir=req.shared_dir)
    workspace = Path(req.workspace)
    record = SweepRecord(sweep_id=time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6],
                         created=time.strftime("%Y-%m-%dT%H:%M:%S"), engine=engine.name,
                         engine_description=engine.describe(), pipeline_name=req.pipeline.name,
                         model_path=req.model_path, axes={a.key: list(a.values) for a in axes}, fixed=fixed)
    t0 = time.perf_counter()
    try:
        record.outcomes = engine.map(specs, workspace=workspace, on_event=on_event, cancel=cancel)
    finally:
        record.wall_s = time.perf_counter() - t0
    if cancel is not None and cancel.cancelled:
        record.status = "cancelled"
    save_sweep(workspace, record)
    return record


def save_sweep(workspace: Path, record: SweepRecord) -> Path:
    path = Path(workspace) / "sweeps" / f"{record.sweep_id}.json"
    atomic_write_text(path, record.model_dump_json(indent=1, exclude={"outcomes": {"__all__": {"record"}}}))
    return path


def event_payload(ev: VariantEvent) -> dict[str, Any]:
    """A variant event as JSON without the embedded run record (the GUI reads the run from the workspace)."""
    return ev.model_dump(mode="json", exclude={"outcome": {"record"}})


def sweep_task(spec: dict[str, Any], emit: Any, cancel: CancelToken) -> dict[str, Any]:
    """Job child entry (``start_task_job("slimline.core.engines.sweep:sweep_task", …)``) of the window's sweeps.

    Variant news go out as MetricEvents (step ``sweep``, kind ``variant``, payload a VariantEvent);
    the job's result is the sweep record's summary.
    """
    import multiprocessing
    import signal

    from slimline.core.results import MetricEvent

    # The job child is a daemon process, which multiprocessing forbids to have children; the local
    # engine's variants are children of this process. They never outlive it: a cancel stops them,
    # and a terminate (SIGTERM) becomes SystemExit here, which makes the engine stop them first.
    multiprocessing.current_process().daemon = False

    def on_term(_sig: int, _frame: Any) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_term)
    req = SweepRequest.model_validate(spec)

    def on_event(ev: VariantEvent) -> None:
        emit(MetricEvent(step_id=SWEEP_STEP, kind=SWEEP_KIND, payload=event_payload(ev)).to_dict())

    return run_sweep(req, on_event=on_event, cancel=cancel).summary()


def variant_event(ev: Any) -> VariantEvent | None:
    """The VariantEvent inside a job event from :func:`sweep_task` (None for other events)."""
    if getattr(ev, "type", "") == "metric" and ev.step_id == SWEEP_STEP and ev.kind == SWEEP_KIND:
        return VariantEvent.model_validate(ev.payload)
    return None


__all__ = ["SweepRecord", "SweepRequest", "build_specs", "run_sweep", "save_sweep", "sweep_task", "variant_event"]
