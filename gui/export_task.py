"""What the export dialog and "Save report" ask the engine's job runner to do in a child process.

Qt-free on purpose: ``slimline.core.jobs.start_task_job`` imports it in a spawned
interpreter. A process rather than a thread because exporting torch -> ONNX runs
seconds of Python that would hold the GIL and freeze the window, and because
cancelling must be able to stop C++ work (cooperative first, then terminate).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

EXPORT_TASK = "slimline.gui.export_task:export_task"
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
    import json

    from slimline.core.export.report import load_export_records, write_report

    run_dir = Path(spec["run_dir"])
    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    out = write_report(record, spec["out"], exports=load_export_records(run_dir), progress=progress)
    return {"path": str(out), "bytes": out.stat().st_size}


def run_export(spec: dict[str, Any], progress: Any = None, cancel: Any = None) -> dict[str, Any]:
    """Do the export described by ``spec``; returns the record as a dict (raises on failure)."""
    if spec.get("kind") == "report":
        return write_run_report(spec, progress)
    variant, data = export_target(spec)
    name = spec.get("name") or variant.name
    fmt = spec["format"]
    if fmt == "bundle":
        from slimline.core.export.bundle import export_bundle

        out = Path(spec["out_dir"]) / f"{name}-bundle"
        rec = export_bundle(variant, out, force=spec.get("force", False), data=data, cancel=cancel, name=name,
                            zip_bundle=spec.get("zip", False), triton=spec.get("triton", False),
                            progress=progress)
    else:
        from slimline.core.export.formats import export_model

        info = {}
        if variant.run is not None and variant.step is not None:
            info = {"run_id": variant.run.get("run_id"), "step_id": variant.step.get("step_id"),
                    "step_title": variant.step.get("title")}
        rec = export_model(variant.handle, fmt, spec["out_dir"], force=spec.get("force", False), data=data,
                           cancel=cancel, name=name, progress=progress, source_info=info)
    record = rec.model_dump(mode="json")
    if variant.run_dir is not None:  # the run's report lists its exports (as `slimline export` does)
        from slimline.core.export.report import append_export_record

        try:
            append_export_record(variant.run_dir, record)
        except OSError:
            pass
    return record


def export_task(spec: dict[str, Any], emit: Callable[[dict[str, Any]], None], cancel: Any) -> dict[str, Any]:
    """Job body: progress goes out as throttled ``progress`` events; the record is the job's result."""
    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last[0] > 0.05 or fraction >= 1.0:
            last[0] = now
            emit({"type": "progress", "fraction": float(fraction), "message": str(message)})

    return run_export(spec, progress, cancel)


def start_export(spec: dict[str, Any]) -> Any:
    """Start the export (or report, ``kind="report"``) through the engine's job runner."""
    from slimline.core.jobs import start_task_job

    return start_task_job(EXPORT_TASK, spec, grace_s=CANCEL_GRACE_S)
