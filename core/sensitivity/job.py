"""Sensitivity and search as jobs: a child process with typed events, progress and cancel.

The CLI and the window start the same task (slimline.core.jobs.start_task_job) and read the same
events: ``progress`` (ProgressEvent), one ``metric`` event per finished layer (kind "layer") or search
candidate (kind "candidate"), then ``done`` with the result (SensitivityResult / SearchResult as JSON)
or ``failed`` / ``cancelled``. Why a process: probes run onnxruntime and torch for minutes; a cancel
must stop C++ work, and the window must keep its GIL.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SENSITIVITY_TASK = "slimline.core.sensitivity.job:sensitivity_task"
SEARCH_TASK = "slimline.core.sensitivity.job:search_task"
CANCEL_GRACE_S = 2.0


def load_inputs(spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(model handle, DataBundle or None, Evaluation) from a job spec (paths, dims, trust, evaluation).

    The data is read as a pipeline run reads it (slimline.core.runner.load_bundle): a language model's
    text file becomes token windows, judged by perplexity."""
    from slimline.core.models import open_model
    from slimline.core.pipeline import Evaluation
    from slimline.core.runner import load_bundle

    model = open_model(spec["model_path"], trust=bool(spec.get("trust", False)))
    if spec.get("dims"):
        model = model.with_dims(**spec["dims"])
    evaluation = Evaluation.model_validate(spec.get("evaluation") or {})
    data_path = spec.get("data_path") or evaluation.data
    train_path = spec.get("train_path") or evaluation.train_data
    return model, load_bundle(evaluation, model, data_path, train_path), evaluation


def _progress(emit: Callable[[dict[str, Any]], None], step: str) -> Callable[[float, str], None]:
    from slimline.core.results import ProgressEvent

    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last[0] > 0.05 or fraction >= 1.0:
            last[0] = now
            f = max(0.0, min(1.0, float(fraction)))
            emit(ProgressEvent(overall=f, step_id=step, fraction=f, message=str(message)).to_dict())
    return progress


def sensitivity_task(spec: dict[str, Any], emit: Callable[[dict[str, Any]], None], cancel: Any) -> dict[str, Any]:
    """Job body of ``slimline sensitivity`` and the window's Analyze button."""
    from slimline.core.results import MetricEvent
    from slimline.core.sensitivity.analyze import analyze
    from slimline.core.sensitivity.models import SensitivitySettings

    _threads(spec)
    model, bundle, evaluation = load_inputs(spec)
    settings = SensitivitySettings.model_validate(spec["settings"])
    result = analyze(model, bundle, settings, workspace=Path(spec["workspace"]), evaluation=evaluation, cancel=cancel,
                     progress=_progress(emit, "sensitivity"), use_cache=spec.get("use_cache", True),
                     on_row=lambda row: emit(MetricEvent(step_id="sensitivity", kind="layer",
                                                         payload=row.model_dump(mode="json")).to_dict()))
    return result.model_dump(mode="json")


def search_task(spec: dict[str, Any], emit: Callable[[dict[str, Any]], None], cancel: Any) -> dict[str, Any]:
    """Job body of ``slimline search`` and the window's Search button."""
    from slimline.core.results import MetricEvent
    from slimline.core.search.models import SearchSettings
    from slimline.core.search.run import search

    _threads(spec)
    model, bundle, evaluation = load_inputs(spec)
    settings = SearchSettings.model_validate(spec["settings"])
    paths = (spec.get("data_path") or evaluation.data, spec.get("train_path") or evaluation.train_data)
    result = search(model, bundle, settings, workspace=Path(spec["workspace"]), evaluation=evaluation, cancel=cancel,
                    progress=_progress(emit, "search"), run_id=spec.get("run_id"), data_paths=paths,
                    on_candidate=lambda c: emit(MetricEvent(step_id="search", kind="candidate",
                                                            payload=c.model_dump(mode="json")).to_dict()))
    return result.model_dump(mode="json")


def _threads(spec: dict[str, Any]) -> None:
    threads = int(spec.get("settings", {}).get("threads") or 0)
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def start(target: str, spec: dict[str, Any]) -> Any:
    """Start ``SENSITIVITY_TASK`` or ``SEARCH_TASK`` in a child process (a slimline.core.jobs.TaskJob)."""
    from slimline.core.jobs import start_task_job

    return start_task_job(target, spec, grace_s=CANCEL_GRACE_S)


def wait_cli(job: Any, on_metric: Callable[[Any], None] | None = None) -> Any:
    """Follow a job from the terminal: progress on stderr, Ctrl-C cancels; the final event is returned."""
    from slimline.core.results import CancelledEvent, DoneEvent, FailedEvent, MetricEvent, ProgressEvent

    final: Any = None
    shown = ""
    try:
        while job.alive:
            for ev in job.poll(timeout=0.1):
                if isinstance(ev, ProgressEvent):
                    line = f"[{ev.overall * 100:3.0f}%] {ev.message}"
                    if line != shown:
                        print(line[:160], file=sys.stderr, flush=True)
                        shown = line
                elif isinstance(ev, MetricEvent) and on_metric is not None:
                    on_metric(ev)
                elif isinstance(ev, (DoneEvent, FailedEvent, CancelledEvent)):
                    final = ev
    except KeyboardInterrupt:
        print("\ncancelling…", file=sys.stderr)
        job.cancel()
        while job.alive:
            job.poll(timeout=0.1)
        return CancelledEvent()
    return final


__all__ = ["SEARCH_TASK", "SENSITIVITY_TASK", "load_inputs", "search_task", "sensitivity_task", "start", "wait_cli"]
