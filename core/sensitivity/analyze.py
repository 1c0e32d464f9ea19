"""Per-layer sensitivity: which layers cost the metric, cheap scores first, the end metric for the top.

1. Cheap scores for every layer and level (the step's ``cheap_scores``: the weight's own error and,
   with data, the error at the layer's output) order the layers.
2. The ``top_k`` layers by that order are measured end to end on the user's data with the task's
   metric: the layer alone at each level, and/or every layer at the default level but this one
   (what excluding it recovers; the uniform preset with every layer changed is measured once).
3. The ranking sorts measured layers by the end metric (ties by the continuous output fidelity),
   then the rest by their cheap score, and every row says which it was.

Runs in the job's process (slimline.core.sensitivity.job) or inline; cached in the workspace by the
content of the model, the data and the settings.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slimline.core.handle import ModelHandle
from slimline.core.pipeline import Evaluation
from slimline.core.plugin import CancelToken
from slimline.core.sensitivity import store
from slimline.core.sensitivity.models import (
    EndMetric,
    LayerSensitivity,
    LevelResult,
    SensitivityResult,
    SensitivitySettings,
)
from slimline.core.sensitivity.prepare import Prepared, data_fingerprint, prepare, step_id
from slimline.core.sensitivity.protocol import KEEP, CheapScore, Layerwise

Progress = Callable[[float, str], None]
RowCallback = Callable[[LayerSensitivity], None]


def analyze(model: ModelHandle, data: Any, settings: SensitivitySettings, *, workspace: Path,
            evaluation: Evaluation | None = None, cancel: CancelToken | None = None,
            progress: Progress | None = None, on_row: RowCallback | None = None,
            use_cache: bool = True) -> SensitivityResult:
    """Rank the step's layers on ``data`` (a DataBundle, its ``eval`` rows judge); cached by content."""
    cancel = cancel or CancelToken()
    say = progress or (lambda f, m: None)
    evaluation = evaluation or Evaluation()
    settings = _normalized(settings)
    t0 = time.perf_counter()
    say(0.0, "hashing the model and the data")
    model_hash = model.content_hash()
    ev = getattr(data, "eval", None) if data is not None else None
    cal = getattr(data, "calibration", None) if data is not None else None   # static INT8 calibrates on it
    data_hash = data_fingerprint(ev.take(settings.max_rows) if ev is not None else None) + data_fingerprint(cal)
    key = store.cache_key(model_hash, data_hash, settings, evaluation)
    if use_cache:
        hit = store.load(workspace, key)
        if hit is not None:
            say(1.0, "from the cache")
            return hit.model_copy(update={"cached": True})
    prep = prepare(model, data, settings.step, settings.params, workspace=workspace, evaluation=evaluation,
                   max_rows=settings.max_rows, threads=settings.threads, seed=settings.seed, cancel=cancel,
                   progress=say)
    try:
        lw = prep.layerwise()
        try:
            result = _rank(prep, lw, settings, cancel, say, on_row)
        finally:
            lw.close()
    finally:
        prep.close()
    result = result.model_copy(update={"model": model.path, "model_hash": model_hash, "cache_key": key,
                                       "seconds": time.perf_counter() - t0})
    store.save(workspace, result)
    say(1.0, "done")
    return result


def _normalized(settings: SensitivitySettings) -> SensitivitySettings:
    """The step as its plugin id and its params with every default written out, so the same analysis has one
    cache key however it was asked for (the window passes the form's full params, the CLI only what was typed)."""
    from slimline.core.registry import get_plugin

    sid = step_id(settings.step)
    try:
        params = get_plugin(sid).Params.model_validate(settings.params).model_dump(mode="json")
    except Exception:  # noqa: BLE001 - an unknown step or bad params fail in prepare() with a clear message
        params = settings.params
    return settings.model_copy(update={"step": sid, "params": params})


def _rank(prep: Prepared, lw: Layerwise, settings: SensitivitySettings, cancel: CancelToken, say: Progress,
          on_row: RowCallback | None) -> SensitivityResult:
    from slimline.core.errors import SlimlineError

    if not lw.layers:
        raise SlimlineError(f"{prep.plugin_cls.id} finds no layer to change in this model", subject=prep.model.path,
                            hint="check the step's exclusion list and op types, or choose another step")
    levels = [lv for lv in lw.levels if settings.levels is None or lv.key in settings.levels]
    if not levels:
        raise SlimlineError(f"none of the levels {settings.levels} exists for {prep.plugin_cls.id}",
                            subject="--levels", hint="use " + ", ".join(lv.key for lv in lw.levels))
    head = lw.default_level if any(lv.key == lw.default_level for lv in levels) else levels[-1].key
    say(0.1, f"cheap scores for {len(lw.layers)} layers")
    cheap = {(c.layer, c.level): c for c in lw.cheap_scores(prep.dataset, cancel)}
    cancel.raise_if_cancelled()
    order = sorted(lw.layers, key=lambda ly: -_cheap_value(cheap.get((ly.name, head))))
    k = len(order) if settings.top_k < 0 else min(settings.top_k, len(order))
    measured = order[:k]
    if k:   # layers the step knows its cheap score underrates (an LM head): measured end to end whatever their rank
        always = set(getattr(lw, "always_measure", ()) or ())
        measured += [ly for ly in order[k:] if ly.name in always]
    forced = len(measured) - k
    work = prep.work / "probes"
    uniform: EndMetric | None = None
    jobs = [(ly, lv.key, "alone") for ly in measured for lv in levels if "alone" in settings.modes]
    jobs += [(ly, head, "all_but") for ly in measured if "all_but" in settings.modes]
    total = len(jobs) + (1 if "all_but" in settings.modes and measured else 0)
    done = 0

    def probe(cfg: dict[str, str], what: str) -> EndMetric:
        nonlocal done
        cancel.raise_if_cancelled()
        say(0.3 + 0.68 * done / max(total, 1), what)
        shutil.rmtree(work, ignore_errors=True)
        changed = any(lv != KEEP for lv in cfg.values())
        handle = lw.build(cfg, work) if changed else prep.step_input   # nothing changed: the step's input
        cancel.raise_if_cancelled()
        score = prep.probe.score(prep.outputs(handle))
        shutil.rmtree(work, ignore_errors=True)
        done += 1
        return score

    if "all_but" in settings.modes and measured:
        uniform = probe({ly.name: head for ly in lw.layers}, f"every layer at {head} (the uniform preset)")
    results: dict[str, dict[str, LevelResult]] = {
        ly.name: {lv.key: LevelResult(level=lv.key, label=lv.label,
                                      weight_error=getattr(cheap.get((ly.name, lv.key)), "weight_error", None),
                                      output_error=getattr(cheap.get((ly.name, lv.key)), "output_error", None))
                  for lv in levels} for ly in lw.layers}
    measured_names = {ly.name for ly in measured}
    for ly in measured:
        for lv in levels:
            if "alone" in settings.modes:
                results[ly.name][lv.key].alone = probe({ly.name: lv.key}, f"{ly.name} alone at {lv.label}")
        if "all_but" in settings.modes:
            results[ly.name][head].all_but = probe({o.name: head for o in lw.layers if o.name != ly.name},
                                                   f"every layer at {head} but {ly.name}")
        if on_row is not None:
            on_row(_row(ly, results[ly.name], head, uniform, cheap, True, 0))
    rows = [_row(ly, results[ly.name], head, uniform, cheap, ly.name in measured_names, 0) for ly in lw.layers]
    rows = _ranked(rows)
    return SensitivityResult(
        model=prep.model.path, model_hash="", step=prep.plugin_cls.id, step_title=prep.plugin_cls.title,
        step_input=prep.step_input.path, settings=settings, dataset=str(getattr(prep.dataset, "name", "")),
        n=len(prep.dataset), input_kind=prep.kind,
        task=prep.probe.task.task, task_reason=prep.probe.task.reason, metric=prep.probe.name,
        higher_is_better=prep.probe.higher_is_better, baseline=prep.probe.baseline, default_level=head,
        uniform=uniform, rows=rows, ranked_by=_ranked_by(settings, head, k, len(rows), forced),
        cheap_vs_end=_spearman(rows, head), notes=[*prep.notes, *getattr(lw, "notes", [])])


def _cheap_value(c: CheapScore | None) -> float:
    if c is None:
        return 0.0
    v = c.output_error if c.output_error is not None else c.weight_error
    return float(v) if v is not None else 0.0


def _end_score(lr: LevelResult, uniform: EndMetric | None) -> tuple[float, float] | None:
    """(metric, fidelity) cost of the layer: what excluding it recovers, else its damage alone."""
    if lr.all_but is not None and uniform is not None:
        return uniform.loss - lr.all_but.loss, uniform.fidelity_loss - lr.all_but.fidelity_loss
    if lr.alone is not None:
        return lr.alone.loss, lr.alone.fidelity_loss
    return None


def _row(ly: Any, levels: dict[str, LevelResult], head: str, uniform: EndMetric | None,
         cheap: dict[tuple[str, str], CheapScore], measured: bool, rank: int) -> LayerSensitivity:
    lr = levels[head]
    end = _end_score(lr, uniform) if measured else None
    c = cheap.get((ly.name, head))
    fid = 0.0
    if end is not None:
        (score, fid), source = end, "end_metric"
    elif c is not None and c.output_error is not None:
        score, source = c.output_error, "output_error"
    else:
        score, source = (c.weight_error or 0.0) if c is not None else 0.0, "weight_error"
    return LayerSensitivity(rank=rank, layer=ly.name, tensor=ly.tensor, op=ly.op, params=ly.params, score=score,
                            source=source, fidelity_score=fid, levels=list(levels.values()))


_SOURCE_ORDER = {"end_metric": 0, "output_error": 1, "weight_error": 2}


def _ranked(rows: list[LayerSensitivity]) -> list[LayerSensitivity]:
    """End-metric rows first (by the metric, ties by output fidelity), then cheap-score rows."""
    ordered = sorted(rows, key=lambda r: (_SOURCE_ORDER[r.source], -round(r.score, 9), -r.fidelity_score))
    return [r.model_copy(update={"rank": i}) for i, r in enumerate(ordered, 1)]


def _ranked_by(settings: SensitivitySettings, head: str, k: int, n: int, forced: int = 0) -> str:
    what = ("what leaving the layer out of the uniform preset recovers" if "all_but" in settings.modes
            else "the loss with the layer alone changed")
    if k == 0:
        return f"cheap scores only (error at the layer's output, else weight error) at level {head}"
    rest = f"; the other {n - k - forced} by their cheap score" if n > k + forced else ""
    also = f" and {forced} the step always measures (its cheap score underrates them)" if forced else ""
    return f"end metric at level {head}: {what}, for the top {k} by cheap score{also}{rest}"


def _spearman(rows: list[LayerSensitivity], head: str) -> float | None:
    """How well the cheap score predicted the end metric on the layers measured both ways."""
    import numpy as np

    pairs = []
    for r in rows:
        lr = r.level(head)
        if r.source != "end_metric" or lr is None:
            continue
        cheap = lr.output_error if lr.output_error is not None else lr.weight_error
        if cheap is not None:
            pairs.append((cheap, r.score))
    if len(pairs) < 3:
        return None
    a, b = (np.argsort(np.argsort(np.array(x, dtype=float))) for x in zip(*pairs))
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


__all__ = ["analyze"]
