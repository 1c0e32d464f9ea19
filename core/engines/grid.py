"""Grids of step settings: ``STEP.PARAM=V1,V2`` entries, checked against the step plugin's Params.

Each value is validated by the plugin's own pydantic ``Params`` (bounds, choices, types),
so a typo fails before anything runs, with a message that names ``STEP.PARAM`` and what
the step accepts. Values are JSON where they parse as JSON (``0.5``, ``true``, ``"a,b"``,
``[1,2]``), plain text otherwise; a whole JSON list (``s1.skip=[[],["fc"]]``) gives values
that themselves contain commas.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from slimline.core.engines.errors import GridError
from slimline.core.engines.spec import VariantSpec, apply_settings
from slimline.core.pipeline import Pipeline, StepSpec

MAX_VARIANTS = 1000


@dataclass(frozen=True)
class GridAxis:
    """One swept parameter: ``key`` is ``STEP.PARAM``, ``values`` are validated (JSON-ready) values."""

    key: str
    values: tuple[Any, ...]


def parse_assignment(text: str, option: str = "--grid") -> tuple[str, list[Any]]:
    """``"s1.ratio=0.25,0.5"`` → (``"s1.ratio"``, [0.25, 0.5]) with values decoded, not yet validated."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    step, dot, param = key.partition(".")
    if not sep or not dot or not step or not param or not raw.strip():
        raise GridError(f"{text!r} must look like STEP.PARAM=V1,V2,…", subject=option,
                        hint="e.g. --grid s1.pruning_ratio=0.25,0.5 (STEP is the step id in the pipeline)")
    raw = raw.strip()
    if raw.startswith("["):
        try:
            whole = json.loads(raw)
        except json.JSONDecodeError:
            whole = None
        if isinstance(whole, list):
            if not whole:
                raise GridError(f"{key}: the value list is empty", subject=f"{option} {key}",
                                hint="give at least one value")
            return key, whole
    return key, [_decode(v.strip()) for v in raw.split(",") if v.strip()]


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _step(pipeline: Pipeline, step_id: str, key: str, option: str) -> StepSpec:
    step = next((s for s in pipeline.steps if s.id == step_id), None)
    steps = ", ".join(f"{s.id} ({s.plugin})" for s in pipeline.steps) or "none"
    if step is None:
        raise GridError(f"the pipeline has no step {step_id!r}", subject=f"{option} {key}",
                        hint=f"use a step id of the pipeline: {steps}")
    if step.placeholder_reason:
        raise GridError(step.placeholder_reason, subject=f"{option} {key}",
                        hint="install the plugin or sweep another step")
    if not step.enabled:
        raise GridError(f"step {step_id} is disabled in the pipeline", subject=f"{option} {key}",
                        hint="enable the step or sweep another one")
    return step


def _allowed(field: Any) -> str:
    """What a field accepts, in words (bounds and choices), for error messages."""
    parts = []
    for m in getattr(field, "metadata", []):
        for attr, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{word} {v}")
    args = getattr(field.annotation, "__args__", None)
    if args and all(isinstance(a, (str, int, float)) for a in args):
        parts.append("one of " + ", ".join(json.dumps(a) for a in args))
    return "; allowed: " + ", ".join(parts) if parts else ""


def validate_setting(pipeline: Pipeline, key: str, values: list[Any], option: str = "--grid") -> tuple[Any, ...]:
    """Each value checked by the step plugin's Params; returns the values as the plugin parsed them."""
    from slimline.core.registry import get_plugin

    step_id, _, param = key.partition(".")
    step = _step(pipeline, step_id, key, option)
    cls = get_plugin(step.plugin)
    fields = cls.Params.model_fields
    if param not in fields:
        names = ", ".join(fields) or "none"
        raise GridError(f"step {step_id} ({step.plugin}) has no parameter {param!r}", subject=f"{option} {key}",
                        hint=f"its parameters: {names} (see `slimline plugins`)")
    out = []
    for value in values:
        try:
            parsed = cls.Params.model_validate({**step.params, param: value})
        except ValidationError as exc:
            errs = [e for e in exc.errors() if e["loc"][:1] == (param,)] or exc.errors()
            msg = "; ".join(e["msg"] for e in errs[:3])
            raise GridError(f"{key}={json.dumps(value)}: {msg}{_allowed(fields[param])}", subject=f"{option} {key}",
                            hint="change the value (see `slimline plugins` for each parameter's range)") from None
        out.append(parsed.model_dump(mode="json")[param])
    if len(set(map(json.dumps, out))) != len(out):
        raise GridError(f"{key} lists the same value twice", subject=f"{option} {key}",
                        hint="give each value once")
    return tuple(out)


def parse_grid(pipeline: Pipeline, entries: list[str]) -> list[GridAxis]:
    """``--grid`` entries → validated axes; the same STEP.PARAM twice is an error."""
    axes: list[GridAxis] = []
    for text in entries:
        key, values = parse_assignment(text)
        if any(a.key == key for a in axes):
            raise GridError(f"{key} is given twice", subject=f"--grid {key}",
                            hint="list all its values in one --grid entry: --grid STEP.PARAM=V1,V2")
        axes.append(GridAxis(key, validate_setting(pipeline, key, values)))
    return axes


def parse_settings(pipeline: Pipeline, entries: list[str], option: str = "--set") -> dict[str, Any]:
    """``--set STEP.PARAM=VALUE`` entries (one value each) → validated settings."""
    out: dict[str, Any] = {}
    for text in entries:
        key, values = parse_assignment(text, option)
        if len(values) != 1:
            raise GridError(f"{key} needs exactly one value", subject=f"{option} {key}",
                            hint="use --grid to sweep several values")
        out[key] = validate_setting(pipeline, key, values, option)[0]
    return out


def expand(base: VariantSpec, axes: list[GridAxis]) -> list[VariantSpec]:
    """Every combination of the axes (the first axis varies slowest), each checked as a whole."""
    from slimline.core.registry import get_plugin

    total = 1
    for a in axes:
        total *= len(a.values)
    if total > MAX_VARIANTS:
        raise GridError(f"the grid has {total} combinations (at most {MAX_VARIANTS})", subject="--grid",
                        hint="sweep fewer values, or split the sweep")
    specs = []
    for combo in itertools.product(*(a.values for a in axes)):
        spec = base.with_settings(dict(zip((a.key for a in axes), combo)))
        for step in spec.pipeline.enabled_steps():  # cross-field rules of a step see the whole combination
            try:
                get_plugin(step.plugin).Params.model_validate(step.params)
            except ValidationError as exc:
                raise GridError(f"variant {spec.title}: step {step.id}: {exc.errors()[0]['msg']}",
                                subject="--grid", hint="leave this combination out of the grid") from None
        specs.append(spec)
    return specs


__all__ = ["MAX_VARIANTS", "GridAxis", "apply_settings", "expand", "parse_assignment", "parse_grid",
           "parse_settings", "validate_setting"]
