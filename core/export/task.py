"""Exports and reports as jobs: one body for the CLI (in process) and the window (child process).

``slimline.core.jobs.start_task_job`` imports this in a spawned interpreter. The window uses a
process rather than a thread because exporting torch -> ONNX runs seconds of Python that would
hold the GIL and freeze the window, and because cancelling must be able to stop C++ work
(cooperative first, then terminate).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXPORT_TASK = "slimline.core.export.task:export_task"
CANCEL_GRACE_S = 3.0   # the engine stages into a hidden folder and removes it when cancelled


def export_target(spec: dict[str, Any]) -> tuple[Any, Any]:
    """(engine variant, data path): from the run folder when it still exists, else the bare model."""
    from slimline.core.export.variants import resolve_variant

    run_dir = spec.get("run_dir")
    if run_dir and (Path(run_dir) / "run.json").is_file():
        variant = resolve_variant(run_dir, step=spec["step_id"], trust=spec.get("trust", False))
        return variant, spec.get("data") or variant.data_path
    from slimline.core.export.variants import Variant
    from slimline.core.handle import ModelHandle

    handle = ModelHandle.model_validate(spec["model"])
    from slimline.core.export.formats import default_name

    return Variant(handle=handle, name=default_name(handle)), spec.get("data")


def write_run_report(spec: dict[str, Any], progress: Any = None) -> dict[str, Any]:
    """The run's HTML report (``slimline report``), listing the run's exports."""
    from slimline.core.export.report import load_export_records, write_report
    from slimline.core.history import load_run

    run_dir = Path(spec["run_dir"])
    record = load_run(run_dir)
    from slimline.core.export.report_search import load_search

    out = write_report(record, spec["out"], exports=load_export_records(run_dir), progress=progress,
                       search=load_search(run_dir))
    return {"path": str(out), "bytes": out.stat().st_size}


def export_variant(variant: Any, fmt: str, out_dir: str | Path, *, name: str, data: Any = None,
                   force: bool = False, cancel: Any = None, progress: Any = None, zip_bundle: bool = False,
                   triton: bool = False, max_batch_size: int | None = None,
                   external_data: bool | None = None, lm_precision: str | None = None,
                   lm_context_length: int = 0) -> Any:
    """Write one verified export of ``variant`` (a file format or a bundle) and list it with its run."""
    if fmt == "bundle":
        from slimline.core.export.bundle import export_bundle

        extra = {} if max_batch_size is None else {"max_batch_size": max_batch_size}
        rec: Any = export_bundle(variant, out_dir, force=force, data=data, cancel=cancel, name=name,
                                 zip_bundle=zip_bundle, triton=triton, progress=progress, lm_precision=lm_precision,
                                 lm_context_length=lm_context_length, **extra)
    else:
        from slimline.core.export.formats import export_model

        info: dict[str, Any] = {}
        if variant.run is not None and variant.step is not None:
            info = {"run_id": variant.run.run_id, "step_id": variant.step.step_id,
                    "step_title": variant.step.title}
        rec = export_model(variant.handle, fmt, out_dir, force=force, data=data, cancel=cancel, name=name,
                           progress=progress, external_data=external_data, source_info=info,
                           lm_context_length=lm_context_length)
    if variant.run_dir is not None:  # the run's report lists its exports
        from slimline.core.export.report import append_export_record

        try:
            append_export_record(variant.run_dir, rec.model_dump(mode="json"))
        except OSError as exc:  # the export itself succeeded; say so and go on
            import sys

            print(f"note: could not record the export in {variant.run_dir}: {exc}", file=sys.stderr)
    return rec


def run_export(spec: dict[str, Any], progress: Any = None, cancel: Any = None) -> dict[str, Any]:
    """Do the export described by ``spec``; returns the record as a dict (raises on failure)."""
    if spec.get("kind") == "report":
        return write_run_report(spec, progress)
    variant, data = export_target(spec)
    name = spec.get("name") or variant.name
    fmt = spec["format"]
    out_dir = Path(spec["out_dir"]) / f"{name}-bundle" if fmt == "bundle" else spec["out_dir"]
    rec = export_variant(variant, fmt, out_dir, name=name, data=data, force=spec.get("force", False),
                         cancel=cancel, progress=progress, zip_bundle=spec.get("zip", False),
                         triton=spec.get("triton", False), lm_precision=spec.get("lm_precision"),
                         lm_context_length=int(spec.get("lm_context_length") or 0))
    return dict(rec.model_dump(mode="json"))


def export_task(spec: dict[str, Any], emit: Callable[[dict[str, Any]], None], cancel: Any) -> dict[str, Any]:
    """Job body: progress goes out as throttled ``progress`` events; the record is the job's result."""
    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last[0] > 0.05 or fraction >= 1.0:
            last[0] = now
            emit({"type": "progress", "overall": float(fraction), "step_id": "", "fraction": float(fraction),
                  "message": str(message)})   # a ProgressEvent: without overall/step_id it arrived as a log line

    return run_export(spec, progress, cancel)


def start_export(spec: dict[str, Any]) -> Any:
    """Start the export (or report, ``kind="report"``) through the engine's job runner."""
    from slimline.core.jobs import start_task_job

    return start_task_job(EXPORT_TASK, spec, grace_s=CANCEL_GRACE_S)
