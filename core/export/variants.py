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
from slimline.core.results import RunRecord, StepResult, run_from_dict


@dataclass
class Variant:
    """One model of a run (the original is one too), or a bare model file: what export acts on.

    The only Variant class of Slimline; the GUI's variants table should build these
    with :func:`variants_of` instead of keeping its own.
    """

    handle: ModelHandle
    name: str                               # default file stem for exports
    run: RunRecord | None = None            # the run record when exporting from a run
    step: StepResult | None = None          # the chosen step's result
    run_dir: Path | None = None
    data_path: str | None = None            # evaluation data recorded with the run
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.run.run_id if self.run is not None else ""

    @property
    def step_id(self) -> str:
        return self.step.step_id if self.step is not None else ""

    @property
    def title(self) -> str:
        return self.step.title if self.step is not None else self.handle.name

    @property
    def key(self) -> str:
        """``run_id/step_id``: unique over the history."""
        return f"{self.run_id}/{self.step_id}"

    @property
    def flags(self) -> list[str]:
        return list(self.step.flags) if self.step is not None else []

    @classmethod
    def of_step(cls, run: RunRecord, step: StepResult, run_dir: Path | None = None) -> Variant:
        """The variant of one step of a recorded run (no file access)."""
        from slimline.core.export.formats import safe_name

        stem = Path(run.model.path).stem if run.model is not None else "model"
        name = safe_name(stem if step.step_id == "original" else f"{stem}-{step.step_id}")
        return cls(handle=step.model, name=name, run=run, step=step, run_dir=run_dir)


def variants_of(run: RunRecord, run_dir: Path | None = None) -> list[Variant]:
    """Every variant of a run, in step order."""
    return [Variant.of_step(run, r, run_dir) for r in run.results]


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


def load_run_record(path: Path) -> RunRecord:
    try:
        record = run_from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read the run record ({str(exc).splitlines()[0]})", subject=str(path),
                          hint="pick a run folder from the workspace's runs/ folder") from None
    if not record.results:
        raise ExportError("the run record has no results", subject=str(path),
                          hint="pick a run that finished at least its first step")
    return record


def pick_step(record: RunRecord, step: str | None, subject: str) -> StepResult:
    results = record.results
    if step is None:
        final = record.final_model
        if final is not None:
            for r in reversed(results):
                if r.model.path == final.path:
                    return r
            return results[-1].model_copy(update={"model": final})
        return results[-1]
    found = record.step(step)
    if found is not None:
        return found
    raise ExportError(f"the run has no step {step!r}", subject=subject,
                      hint=f"pick one of: {', '.join(r.step_id for r in results)}")


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
    handle = result.model
    missing = [f for f in (handle.files or [handle.path]) if not Path(f).exists()]
    if missing:
        raise ExportError(f"the variant's file is gone from the step cache: {missing[0]}", subject=str(rj),
                          hint="re-run the pipeline (it will recompute the step), then export again")
    variant = Variant.of_step(record, result, rj.parent)
    data = record.data.eval
    variant.data_path = data if data and Path(data).exists() else None
    return variant
