"""Pick what to export: a model file, or one variant (step) of a recorded run.

A run folder (or its run.json) means "the run's final model" unless a step id
is given; the run also tells which evaluation data to verify on and what
produced the variant, which the bundle's model card needs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimline.core.export.records import ExportError
from slimline.core.handle import ModelHandle


@dataclass
class Variant:
    handle: ModelHandle
    name: str                               # default file stem for exports
    run: dict[str, Any] | None = None       # the run record when exporting from a run
    step: dict[str, Any] | None = None      # the StepResult dict of the chosen step
    run_dir: Path | None = None
    data_path: str | None = None            # evaluation data recorded with the run
    info: dict[str, Any] = field(default_factory=dict)


def _run_json(target: Path) -> Path | None:
    if target.is_dir() and (target / "run.json").is_file():
        return target / "run.json"
    if target.is_file() and target.suffix == ".json":
        try:
            head = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if isinstance(head, dict) and "run_id" in head and "results" in head:
            return target
    return None


def load_run_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read the run record ({exc})", subject=str(path),
                          hint="pick a run folder from the workspace's runs/ folder") from None
    if not isinstance(record, dict) or not record.get("results"):
        raise ExportError("the run record has no results", subject=str(path),
                          hint="pick a run that finished at least its first step")
    return record


def pick_step(record: dict[str, Any], step: str | None, subject: str) -> dict[str, Any]:
    results = record["results"]
    ids = [r.get("step_id") for r in results]
    if step is None:
        final = record.get("final_model")
        if final:
            for r in reversed(results):
                if r.get("model", {}).get("path") == final.get("path"):
                    return r
            return {**results[-1], "model": final}
        return results[-1]
    for r in results:
        if r.get("step_id") == step:
            return r
    raise ExportError(f"the run has no step {step!r}", subject=subject,
                      hint=f"pick one of: {', '.join(str(i) for i in ids)}")


def resolve_variant(target: str | Path, *, step: str | None = None, trust: bool = False) -> Variant:
    """A model file/folder, or a run folder / run.json (its final model, or ``step``)."""
    from slimline.core.models.detect import detect_format  # noqa: F401 - cheap; fails early on odd files

    p = Path(target).expanduser()
    if not p.exists():
        raise ExportError("no such file or folder", subject=str(p),
                          hint="give a model file, or a run folder from the workspace (runs/<run_id>)")
    rj = _run_json(p)
    if rj is None:
        if step is not None:
            raise ExportError("--step only applies to a run folder or run.json", subject=str(p),
                              hint="drop --step, or give the run folder instead of a model file")
        from slimline.core.export.formats import default_name
        from slimline.core.models import open_model

        handle = open_model(p, trust=trust)
        return Variant(handle=handle, name=default_name(handle))
    record = load_run_record(rj)
    result = pick_step(record, step, str(rj))
    handle = ModelHandle.model_validate(result["model"])
    missing = [f for f in (handle.files or [handle.path]) if not Path(f).exists()]
    if missing:
        raise ExportError(f"the variant's file is gone from the step cache: {missing[0]}", subject=str(rj),
                          hint="re-run the pipeline (it will recompute the step), then export again")
    original = record.get("model", {})
    from slimline.core.export.formats import safe_name

    stem = Path(original.get("path", "model")).stem if original else "model"
    sid = result.get("step_id", "final")
    name = safe_name(stem if sid == "original" else f"{stem}-{sid}")
    data = (record.get("data") or {}).get("eval")
    return Variant(handle=handle, name=name, run=record, step=result, run_dir=rj.parent,
                   data_path=data if data and Path(data).exists() else None)
