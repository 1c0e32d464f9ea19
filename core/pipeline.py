"""Pipeline files: JSON, hand-editable, versioned, validated with named fields.

A pipeline is a list of steps (plugin id + params) plus evaluation settings.
Unknown plugins load as disabled placeholders that keep their params, so a
file written with a third-party plugin survives a round trip without it.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slimline.core.errors import PipelineError
from slimline.core.fsutil import atomic_write_text
from slimline.core.handle import Family, ModelHandle
from slimline.core.plugin import Problem

FORMAT = "slimline.pipeline"
SCHEMA_VERSION = 1
# What a model's output is (slimline.core.tasks holds the metrics; spelled here to keep pipeline import-light).
TaskName = Literal["classification", "embedding", "dense_map", "token_logits", "generic"]
MAX_FILE_BYTES = 16 << 20


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    plugin: str
    plugin_version: str = "1"
    enabled: bool = True
    params: dict[str, Any] = Field(default_factory=dict)
    # Set when the plugin is not installed: the step is kept but cannot run.
    placeholder_reason: str = Field(default="", exclude=True)


class LatencySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_sizes: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=lambda: [1], min_length=1, max_length=64, description="Batch sizes to time")
    runs: int = Field(50, ge=1, le=100000, description="Timed runs per batch size")
    warmup: int = Field(10, ge=0, le=10000, description="Untimed warm-up runs")
    threads: int = Field(0, ge=0, le=512, description="Intra-op threads (0 = all cores)")


class Budgets(BaseModel):
    """How much a step may change the model, per task (slimline.core.tasks decides which apply)."""

    model_config = ConfigDict(extra="forbid")

    max_accuracy_drop: float = Field(0.01, ge=0, le=1, description="Allowed top-1 drop vs the original "
                                     "(classification with labelled data)")
    min_cosine: float = Field(0.99, ge=-1, le=1, description="Minimum mean output cosine vs the original "
                              "(classification without labels, and generic outputs)")
    embedding_min_cosine: float = Field(0.99, ge=-1, le=1, description=(
        "Embeddings: minimum mean cosine of the pooled vector (mean over the attention mask) vs the original"))
    embedding_min_nn_agreement: float = Field(0.0, ge=0, le=1, description=(
        "Embeddings: minimum share of rows whose nearest neighbour is unchanged (0 = shown, not enforced)"))
    dense_map_max_rel_l2: float = Field(0.05, ge=0, le=100, description=(
        "Dense maps (segmentation, probability maps): maximum relative L2 error vs the original"))
    detection_max_score_rel_l2: float = Field(0.10, ge=0, le=100, description=(
        "Detection heads: maximum relative L2 error of the score rows vs the original. Looser than for maps "
        "because most scores sit near 0, where the 1 %-of-full-scale floor divides; whether the detections "
        "survive is judged by the positives IoU"))
    dense_map_min_agreement: float = Field(0.0, ge=0, le=1, description=(
        "Dense maps: minimum share of positions with the same decision at the threshold "
        "(0 = shown, not enforced)"))
    dense_map_threshold: float = Field(0.25, ge=0, le=1, description=(
        "Dense maps: a cell (pixel, or anchor × class of a detection head) is a positive when its score is "
        "above this"))
    dense_map_min_positives_iou: float = Field(0.5, ge=0, le=1, description=(
        "Dense maps: minimum IoU of the original's and the step's positives (cells above the threshold); "
        "enforced whenever the original has positives (0 = shown, not enforced)"))
    token_min_agreement: float = Field(0.9, ge=0, le=1, description=(
        "Language models: minimum share of positions where the predicted next token is unchanged"))
    token_max_kl: float = Field(0.1, ge=0, le=100, description=(
        "Language models: maximum mean KL divergence (nats) of the next-token distribution vs the original"))
    token_max_perplexity_increase: float = Field(0.05, ge=0, le=100, description=(
        "Language models: maximum relative perplexity increase vs the original (0.05 = +5 %), "
        "when the data has token ids"))
    generic_max_rel_l2: float = Field(0.05, ge=0, le=100, description=(
        "Generic outputs: maximum relative L2 error vs the original"))


class LMSettings(BaseModel):
    """Language models on a text file (task token_logits + a .txt evaluation file): what is measured.

    Defaults keep the original of a 135M model to seconds, not minutes: 24 windows × 128
    tokens for perplexity and a few short greedy continuations for speed and side by side.
    """

    model_config = ConfigDict(extra="forbid")

    window_length: int = Field(128, ge=8, le=32768, description=(
        "Text tokens per perplexity window (a BOS token is put in front when the tokenizer starts texts with one)"))
    window_count: int = Field(24, ge=1, le=100_000, description=(
        "Windows of the text file scored (at most; a short file gives fewer)"))
    stride: int | None = Field(None, ge=1, le=32768, description=(
        "Tokens between window starts (empty = the window length, no overlap; smaller = overlapping windows, "
        "each token scored once, with more context)"))
    prompts: str | None = Field(None, description=(
        "Prompts for the generations side by side: a .txt file (one prompt per line) or a .json list of strings, "
        "relative to the pipeline file (empty = the first sentences of the evaluation text)"),
        json_schema_extra={"ui": "path"})
    prompt_count: int = Field(4, ge=1, le=64, description=(
        "Without a prompt file: how many first sentences of the evaluation text serve as prompts"))
    max_new_tokens: int = Field(32, ge=1, le=4096, description="Greedy tokens generated per prompt")


class Evaluation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: str | None = Field(None, description="Evaluation dataset (relative to the pipeline file)")
    train_data: str | None = Field(
        None, description="Training/calibration dataset for distillation and static quantization "
                          "(relative to the pipeline file; defaults to a split of the evaluation data)")
    latency: LatencySettings = Field(default_factory=LatencySettings)
    budgets: Budgets = Field(default_factory=Budgets)
    device: str = "cpu"
    task: TaskName | None = Field(
        None, description="What the model's output is, which decides how fidelity is judged: classification, "
                          "embedding, dense_map, token_logits or generic (empty = inferred from the model, its "
                          "config and the data; the run shows the guess and why)")
    max_rows: int | None = Field(
        None, ge=1, le=10_000_000, description="Evaluate on at most this many rows of the evaluation data "
                                               "(empty = all rows)")
    lm: LMSettings = Field(default_factory=LMSettings, description=(
        "Language models with a text file: perplexity windows, prompts and generation length"))


class Pipeline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    schema_version: int = SCHEMA_VERSION
    name: str = "untitled"
    steps: list[StepSpec] = Field(default_factory=list)
    evaluation: Evaluation = Field(default_factory=Evaluation)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=False) + "\n"

    def enabled_steps(self) -> list[StepSpec]:
        return [s for s in self.steps if s.enabled and not s.placeholder_reason]

    def new_step_id(self) -> str:
        used = {s.id for s in self.steps}
        n = 1
        while f"s{n}" in used:
            n += 1
        return f"s{n}"


# --- schema migration: pure functions from version N to N+1 ---------------------------------
def _migrate_0_to_1(doc: dict[str, Any]) -> dict[str, Any]:
    """v0 (pre-release) used "pipeline" for steps and "type" for the plugin id."""
    out = dict(doc)
    steps = out.pop("pipeline", out.get("steps", []))
    new_steps = []
    for i, s in enumerate(steps):
        s = dict(s)
        if "type" in s and "plugin" not in s:
            s["plugin"] = s.pop("type")
        s.setdefault("id", f"s{i + 1}")
        new_steps.append(s)
    out["steps"] = new_steps
    out["schema_version"] = 1
    out.setdefault("format", FORMAT)
    return out


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _migrate_0_to_1}


def migrate(doc: dict[str, Any]) -> dict[str, Any]:
    version = doc.get("schema_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise PipelineError(f"schema_version must be an integer, got {version!r}", subject="schema_version",
                            hint=f"set \"schema_version\": {SCHEMA_VERSION}")
    if version > SCHEMA_VERSION:
        raise PipelineError(
            f"written by a newer Slimline (schema {version}; this version reads up to {SCHEMA_VERSION})",
            hint="update Slimline to open this pipeline", subject="schema_version")
    while version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise PipelineError(f"no migration from schema {version}", subject="schema_version",
                                hint=f"schema versions run from 0 to {SCHEMA_VERSION}; fix schema_version")
        try:
            doc = MIGRATIONS[version](doc)
        except (TypeError, ValueError, AttributeError) as exc:
            raise PipelineError(f"cannot upgrade this schema {version} file: steps are malformed ({exc})",
                                subject="steps", hint="each step must be an object with a plugin id") from None
        version = doc["schema_version"]
    return doc


def _describe_validation(exc: ValidationError, doc: dict[str, Any]) -> str:
    lines = []
    for err in exc.errors()[:5]:
        loc = list(err["loc"])
        where = ".".join(str(x) for x in loc)
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            try:
                sid = doc["steps"][loc[1]].get("id", loc[1])
            except Exception:
                sid = loc[1]
            where = f"step {sid}" + ("." + ".".join(str(x) for x in loc[2:]) if len(loc) > 2 else "")
        lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)


def parse_pipeline(doc: Any, *, source: str = "pipeline") -> Pipeline:
    """Validate a decoded JSON document into a Pipeline, checking every step's params."""
    if not isinstance(doc, dict):
        raise PipelineError("not a pipeline: expected a JSON object", subject=source,
                            hint='start from the demo pipeline or `{"format": "slimline.pipeline", "steps": []}`')
    if doc.get("format", FORMAT) != FORMAT:
        raise PipelineError(f"format is {doc.get('format')!r}, expected {FORMAT!r}", subject=source,
                            hint="this is not a Slimline pipeline file; open the .json file Slimline saved")
    doc = migrate(doc)
    try:
        pipe = Pipeline.model_validate(doc)
    except ValidationError as exc:
        raise PipelineError(_describe_validation(exc, doc), subject=source,
                            hint="fix the named field and open the file again") from None
    ids = [s.id for s in pipe.steps]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise PipelineError(f"duplicate step ids: {', '.join(dupes)}", subject=source,
                            hint="give every step its own id")
    from slimline.core.registry import discover

    registry = discover()
    for step in pipe.steps:
        entry = registry.get(step.plugin)
        if entry is None or entry.plugin is None:
            why = "not installed" if entry is None else f"failed to load ({entry.error})"
            step.placeholder_reason = f"plugin {step.plugin!r} {why}"
            step.enabled = False
            continue
        try:
            entry.plugin.Params.model_validate(step.params)
        except ValidationError as exc:
            msgs = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'params'}: {e['msg']}"
                             for e in exc.errors()[:5])
            raise PipelineError(f"step {step.id} ({step.plugin}): {msgs}", subject=source,
                                hint="see `slimline plugins` for the allowed values") from None
    return pipe


def load_pipeline(path: str | os.PathLike[str]) -> Pipeline:
    p = Path(path)
    try:
        if p.is_file() and p.stat().st_size > MAX_FILE_BYTES:
            raise PipelineError(f"the file is {p.stat().st_size / 2**20:.0f} MiB; pipeline files are small JSON "
                                f"documents (at most {MAX_FILE_BYTES // 2**20} MiB)", subject=str(p),
                                hint="open the pipeline .json file, not a model or dataset")
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PipelineError("file not found", subject=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"cannot read: {exc}", subject=str(p),
                            hint="pipeline files are UTF-8 JSON text; open the .json file Slimline saved") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipelineError(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
                            subject=str(p), hint="fix the JSON syntax") from None
    except RecursionError:
        raise PipelineError("the JSON is nested too deeply to be a pipeline", subject=str(p),
                            hint="start from the demo pipeline; steps and params are only a few levels deep") from None
    pipe = parse_pipeline(doc, source=str(p))
    ev = pipe.evaluation
    for attr in ("data", "train_data"):
        value = getattr(ev, attr)
        if value and not Path(value).is_absolute():
            setattr(ev, attr, str((p.parent / value).resolve()))
    if ev.lm.prompts and not Path(ev.lm.prompts).is_absolute():
        ev.lm.prompts = str((p.parent / ev.lm.prompts).resolve())
    return pipe


def save_pipeline(pipe: Pipeline, path: str | os.PathLike[str]) -> None:
    atomic_write_text(Path(path), pipe.to_json())


def check_chain(pipe: Pipeline, model: ModelHandle) -> list[tuple[str, Problem]]:
    """Walk the format chain; report each step's problems with the fix (e.g. insert a conversion)."""
    from slimline.core.registry import get_plugin

    found: list[tuple[str, Problem]] = []
    family: Family = model.family
    for step in pipe.steps:
        if step.placeholder_reason:
            found.append((step.id, Problem(step.placeholder_reason, severity="warning",
                                           fix="install the plugin or remove the step")))
            continue
        if not step.enabled:
            continue
        plugin = get_plugin(step.plugin)
        params = plugin.Params.model_validate(step.params)
        if family == model.family:
            probs = plugin().check(model, params)  # same family: the input is a fair stand-in
        else:  # after a conversion the file does not exist yet: check the format only
            probs = plugin().check_format(model.model_copy(update={"family": family}))
        found += [(step.id, prob) for prob in probs]
        if not getattr(plugin, "preserves_format", False):
            family = plugin.output_format
    return found
