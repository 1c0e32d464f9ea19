"""Typed results of the engine: measurements, step results, run records and job events.

Why one module: render, report, card, export and the GUI all read the same
numbers; with one set of models they cannot drift apart, and a field renamed
here is found by the type checker instead of by a ``KeyError`` in front of a user.
The models turn into dicts only where JSON is written or read (``run.json``, the
eval cache) and where events cross the process pipe (:func:`event_to_dict` /
:func:`event_from_dict`). The JSON shapes are the ones Slimline wrote before the
models existed, so older readers and files keep working; ``run.json`` now says
``schema_version`` and :func:`migrate_run` brings older files up to date.
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_serializer

from slimline.core.handle import ModelHandle
from slimline.core.lm.report import LMReport
from slimline.core.metrics import AccuracyReport, FidelityReport, LatencyReport, SizeReport

RUN_SCHEMA_VERSION = 2
RunStatus = Literal["running", "done", "failed", "cancelled", "interrupted"]


class _Json(BaseModel):
    """Base: keeps unknown keys (a newer writer's) and leaves out optional keys that were never set.

    ``_omit_if_none`` lists the keys the old dicts simply did not have when there
    was nothing to say (no accuracy without labels, no final model before the end);
    dumping them as ``null`` would change the files' shape.
    """

    model_config = ConfigDict(extra="allow")
    _omit_if_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _drop_absent(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for key in self._omit_if_none:
                if data.get(key, 0) is None:
                    del data[key]
        return data

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what is written to files and sent over the process pipe)."""
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------- measurements


class Fidelity(FidelityReport):
    """Fidelity against the pipeline's original model, and on which inputs it was measured."""

    input_kind: Literal["dataset", "random"]
    dataset: str = ""
    # Task-aware fidelity (slimline.core.tasks); absent in records written before tasks existed.
    task: str | None = None          # classification | embedding | dense_map | token_logits | generic
    task_reason: str = ""            # why that task (inferred, or set in the pipeline)
    metric: str | None = None        # the task's headline metric, e.g. "pooled cosine"
    value: float | None = None
    higher_is_better: bool = True
    worst: float | None = None       # the worst row, where it means something
    extra: dict[str, float | None] = Field(default_factory=dict)  # None: not finite (JSON has no inf)

    _TASK_KEYS: ClassVar[tuple[str, ...]] = ("task", "task_reason", "metric", "value", "higher_is_better",
                                             "worst", "extra")

    @model_serializer(mode="wrap")
    def _drop_task_keys(self, handler: Any) -> Any:
        """Without a task (older records) the JSON keeps its old shape."""
        data = handler(self)
        if isinstance(data, dict) and self.task is None:
            for key in self._TASK_KEYS:
                data.pop(key, None)
        return data


class Measurement(_Json):
    """What :class:`slimline.core.evaluate.Evaluator` measures for one model (every step alike)."""

    _omit_if_none: ClassVar[tuple[str, ...]] = ("note", "fidelity", "accuracy", "latency", "lm")

    size: SizeReport
    note: str | None = None                          # why the model could not be run (size only)
    fidelity: Fidelity | None = None
    accuracy: AccuracyReport | None = None           # only with labelled evaluation data
    latency: dict[str, LatencyReport] | None = None  # by batch size (as a string: JSON keys)
    # Language models on a text file: perplexity, vs-original scores, generations, speed, memory
    # (absent in other runs and in records from before LM support: no schema change needed).
    lm: LMReport | None = None


class StepResult(Measurement):
    """One row of a run: the model a step produced and its measurements ("original" is row 0)."""

    _omit_if_none: ClassVar[tuple[str, ...]] = Measurement._omit_if_none + ("tables",)

    step_id: str
    plugin: str = ""
    title: str = ""
    model: ModelHandle
    metrics: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    tables: dict[str, Any] | None = None             # the original has none
    flags: list[str] = Field(default_factory=list)   # bigger | slower | over_budget
    duration_s: float = 0.0
    cached: bool = False

    @classmethod
    def from_measurement(cls, m: Measurement, **fields: Any) -> StepResult:
        return cls(**{k: getattr(m, k) for k in Measurement.model_fields}, **(m.model_extra or {}), **fields)

    def measurement(self) -> Measurement:
        return Measurement(**{k: getattr(self, k) for k in Measurement.model_fields})


# --------------------------------------------------------------------------- run record


class RunError(_Json):
    """Why a run failed (SlimlineError.to_dict() plus where)."""

    _omit_if_none = ("details",)

    message: str = ""
    hint: str = ""
    subject: str = ""
    step_id: str = ""
    details: str | None = None


class RunData(_Json):
    eval: str | None = None
    train: str | None = None


class RunRecord(_Json):
    """``workspace/runs/<run_id>/run.json``: one run (a set of variants), rewritten after every step."""

    _omit_if_none = ("final_model",)

    schema_version: int = RUN_SCHEMA_VERSION
    run_id: str
    created: str = ""
    status: RunStatus = "running"
    pipeline: dict[str, Any] = Field(default_factory=dict)     # the pipeline document as run
    model: ModelHandle | None = None                          # the original
    data: RunData = Field(default_factory=RunData)
    environment: dict[str, Any] = Field(default_factory=dict)  # slimline.core.metrics.environment()
    results: list[StepResult] = Field(default_factory=list)
    error: RunError | None = None
    final_model: ModelHandle | None = None

    def step(self, step_id: str) -> StepResult | None:
        return next((r for r in self.results if r.step_id == step_id), None)

    @property
    def pipeline_name(self) -> str:
        return str(self.pipeline.get("name", ""))


def migrate_run(doc: dict[str, Any]) -> dict[str, Any]:
    """An older run.json document brought to RUN_SCHEMA_VERSION (pure: the input is not changed).

    v1 (no ``schema_version``): results could still carry the evaluator's raw
    ``reference_outputs``; runs killed before the first save may lack ``data``,
    ``error`` or ``results``. v2 adds ``schema_version``.
    """
    if not isinstance(doc, dict):
        raise ValueError("a run record is a JSON object")  # noqa: TRY004 - callers skip bad files on ValueError
    version = doc.get("schema_version", 1)
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"unknown run record schema_version {version!r}")
    if version > RUN_SCHEMA_VERSION:
        raise ValueError(f"run record schema_version {version} is newer than this Slimline "
                         f"({RUN_SCHEMA_VERSION}); update Slimline to read it")
    out = dict(doc)
    if version == 1:
        out = _v1_to_v2(out)
    return out


def _v1_to_v2(doc: dict[str, Any]) -> dict[str, Any]:
    raw = doc.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    results = []
    for r in doc.get("results") or []:
        r = {k: v for k, v in r.items() if k != "reference_outputs"}
        results.append(r)
    return {"schema_version": 2, **{k: v for k, v in doc.items() if k != "schema_version"},
            "data": {"eval": data.get("eval"), "train": data.get("train")},
            "results": results, "error": doc.get("error")}


def run_from_dict(doc: dict[str, Any]) -> RunRecord:
    """Parse a run.json document of any known version (raises ValueError if it is not one)."""
    return RunRecord.model_validate(migrate_run(doc))


def as_run(record: RunRecord | dict[str, Any]) -> RunRecord:
    """Accept a RunRecord or its JSON form (callers that still read run.json themselves)."""
    return record if isinstance(record, RunRecord) else run_from_dict(record)


# --------------------------------------------------------------------------- job events


class ProgressEvent(_Json):
    type: Literal["progress"] = "progress"
    overall: float
    step_id: str
    fraction: float
    message: str = ""


class StepStartedEvent(_Json):
    type: Literal["step_started"] = "step_started"
    step_id: str
    index: int
    total: int
    title: str


class StepResultEvent(_Json):
    type: Literal["step_result"] = "step_result"
    result: StepResult


class LogEvent(_Json):
    _omit_if_none = ("step_id", "level")

    type: Literal["log"] = "log"
    message: str = ""
    step_id: str | None = None      # None: from the worker, not a step
    level: str | None = None        # "warning" for library warnings


class MetricEvent(_Json):
    """Live numbers from a step (``loss`` curves, ``validation`` accuracy, ...)."""

    type: Literal["metric"] = "metric"
    step_id: str
    kind: str
    payload: dict[str, Any] = Field(default_factory=dict)


class RunSummary(_Json):
    run_id: str
    status: RunStatus


class DoneEvent(_Json):
    """The job ended well: a pipeline run names its run; a task job (export, report) carries its result."""

    _omit_if_none = ("run", "result")

    type: Literal["done"] = "done"
    run: RunSummary | None = None
    result: dict[str, Any] | None = None


class FailedEvent(_Json):
    _omit_if_none = ("details",)

    type: Literal["failed"] = "failed"
    message: str = ""
    hint: str = ""
    subject: str = ""
    step_id: str = ""
    details: str | None = None


class CancelledEvent(_Json):
    _omit_if_none = ("forced",)

    type: Literal["cancelled"] = "cancelled"
    forced: bool | None = None      # True: terminated after the grace period


JobEvent = Annotated[ProgressEvent | StepStartedEvent | StepResultEvent | LogEvent | MetricEvent | DoneEvent
                     | FailedEvent | CancelledEvent, Field(discriminator="type")]
FinalEvent = DoneEvent | FailedEvent | CancelledEvent
FINAL_TYPES = ("done", "failed", "cancelled")
_EVENTS: TypeAdapter[Any] = TypeAdapter(JobEvent)


def event_to_dict(event: Any) -> dict[str, Any]:
    """The event's JSON form, for the process pipe."""
    return event.to_dict()


def event_from_dict(doc: dict[str, Any]) -> Any:
    """The typed event for a dict from the pipe (raises pydantic.ValidationError for unknown shapes)."""
    return _EVENTS.validate_python(doc)


def as_event(event: Any) -> Any:
    """Accept a typed event or its dict form."""
    return event_from_dict(event) if isinstance(event, dict) else event


__all__ = [
    "FINAL_TYPES",
    "RUN_SCHEMA_VERSION",
    "CancelledEvent",
    "DoneEvent",
    "FailedEvent",
    "Fidelity",
    "FinalEvent",
    "JobEvent",
    "LogEvent",
    "Measurement",
    "MetricEvent",
    "ProgressEvent",
    "RunData",
    "RunError",
    "RunRecord",
    "RunSummary",
    "StepResult",
    "StepResultEvent",
    "StepStartedEvent",
    "as_event",
    "as_run",
    "event_from_dict",
    "event_to_dict",
    "migrate_run",
    "run_from_dict",
]
