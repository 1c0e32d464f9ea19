"""What an engine runs and what it hands back: one variant in, one typed outcome out.

A variant is a pipeline (with some step parameters set), a model, data and evaluation
overrides. Engines never see grids or searches: a sweep (``slimline sweep``) and the
budgeted search both turn their candidates into a ``list[VariantSpec]`` and call
``engine.map(specs, workspace=...)``; every variant becomes one run in the workspace
history, so the Results table, the Pareto chart and ``slimline report`` see it.
"""
from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from slimline.core.pipeline import Evaluation, Pipeline
from slimline.core.results import RunRecord, StepResult

OutcomeStatus = Literal["done", "failed", "cancelled"]
EventKind = Literal["queued", "started", "progress", "finished"]


def setting_label(settings: dict[str, Any]) -> str:
    """``s1.pruning_ratio=0.3 s2.epochs=2`` (``baseline`` when nothing is set)."""
    if not settings:
        return "baseline"
    return " ".join(f"{k}={_short(v)}" for k, v in settings.items())


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_short(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_settings(pipeline: Pipeline, settings: dict[str, Any]) -> Pipeline:
    """A copy of ``pipeline`` with ``STEP.PARAM`` values written into the steps' params (validated elsewhere)."""
    pipe = pipeline.model_copy(deep=True)
    for key, value in settings.items():
        step_id, _, param = key.partition(".")
        step = next((s for s in pipe.steps if s.id == step_id), None)
        if step is None:
            raise KeyError(f"the pipeline has no step {step_id!r} (setting {key})")
        step.params = {**step.params, param: copy.deepcopy(value)}
    return pipe


class VariantSpec(BaseModel):
    """One variant to run: everything a worker on any machine needs, as data (no live objects).

    ``settings`` are ``"STEP.PARAM": value`` pairs already written into ``pipeline``; they
    are kept apart to label the run and the tables. Paths name files on the machine that
    submits the sweep; the Ray engine ships them by content hash, the local engine uses them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str = ""
    settings: dict[str, Any] = Field(default_factory=dict)
    pipeline: Pipeline
    model_path: str
    data_path: str | None = None            # evaluation data (else the pipeline's evaluation.data)
    train_path: str | None = None           # training/calibration data (else evaluation.train_data)
    evaluation: dict[str, Any] = Field(default_factory=dict)  # overrides of pipeline.evaluation
    trust: bool = False
    dims: dict[str, int] = Field(default_factory=dict)
    threads: int = Field(0, ge=0, description="intra-op threads for measuring; 0 = the engine's share of cores")
    use_cache: bool = True
    num_cpus: float = Field(1.0, gt=0, description="CPUs a variant needs (a Ray task's resource request)")
    num_gpus: float = Field(0.0, ge=0)

    @property
    def title(self) -> str:
        return self.label or setting_label(self.settings)

    def resolved_pipeline(self) -> Pipeline:
        """The pipeline as it runs: evaluation overrides merged, the variant's label in its name."""
        doc = self.pipeline.model_dump(mode="json")
        if self.evaluation:
            doc["evaluation"] = Evaluation.model_validate(_merge(doc["evaluation"], self.evaluation)).model_dump(
                mode="json")
        doc["name"] = f"{doc.get('name') or 'untitled'} [{self.title}]"
        pipe = Pipeline.model_validate(doc)
        for new, old in zip(pipe.steps, self.pipeline.steps):  # placeholder steps stay disabled
            new.placeholder_reason = old.placeholder_reason
        return pipe

    def eval_path(self) -> str | None:
        return self.data_path or self.pipeline.evaluation.data

    def training_path(self) -> str | None:
        return self.train_path or self.pipeline.evaluation.train_data

    def job_spec(self, *, workspace: str, run_id: str, threads: int) -> dict[str, Any]:
        """The spec ``slimline.core.jobs`` runs (one pipeline run), for this variant."""
        return {"pipeline": self.resolved_pipeline().model_dump(mode="json"), "model_path": self.model_path,
                "data_path": self.eval_path(), "train_path": self.training_path(), "workspace": workspace,
                "trust": self.trust, "threads": self.threads or threads, "use_cache": self.use_cache,
                "run_id": run_id, "dims": dict(self.dims)}

    def with_settings(self, settings: dict[str, Any], label: str = "") -> VariantSpec:
        """A copy with more ``STEP.PARAM`` values written into the pipeline (validated by the caller)."""
        pipe = apply_settings(self.pipeline, settings)
        merged = {**self.settings, **settings}
        return self.model_copy(update={"pipeline": pipe, "settings": merged, "label": label or setting_label(merged)})


class VariantOutcome(BaseModel):
    """How one variant ended: its run record when it ran, else why not.

    ``record`` is the same :class:`RunRecord` ``slimline run`` writes (already saved in the
    workspace); a variant whose worker died has ``status="failed"`` and the reason.
    """

    index: int
    label: str
    settings: dict[str, Any] = Field(default_factory=dict)
    status: OutcomeStatus
    run_id: str = ""
    record: RunRecord | None = None
    reason: str = ""
    hint: str = ""
    wall_s: float = 0.0
    worker: str = ""      # where it ran: "local pid 123", "ray node 1a2b3c pid 456 (host)"
    engine: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "done"

    @property
    def final(self) -> StepResult | None:
        """The last step's result (the variant's model), or None when the run has none."""
        if self.record is None or not self.record.results:
            return None
        return self.record.results[-1]

    def summary(self) -> dict[str, Any]:
        """The outcome without the embedded record (sweep files, the GUI's pipe)."""
        return self.model_dump(mode="json", exclude={"record"})


class VariantEvent(BaseModel):
    """Live news of one variant for progress displays (queued, started, progress, finished)."""

    kind: EventKind
    index: int
    label: str = ""
    fraction: float = 0.0      # of this variant's run
    message: str = ""
    worker: str = ""
    pid: int | None = None     # the worker process (the fault test kills it)
    outcome: VariantOutcome | None = None   # with kind == "finished"


__all__ = ["EventKind", "OutcomeStatus", "VariantEvent", "VariantOutcome", "VariantSpec", "apply_settings",
           "setting_label"]
