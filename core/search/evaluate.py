"""Build one candidate and verify it end to end: the single place a candidate is evaluated.

Sequential, in the job's process. Why one small function: the engine layer for many variants (a local
pool or Ray) can route :meth:`CandidateEvaluator.evaluate` through ``engine.map`` later without the
search changing; a :class:`CandidateSpec` is plain data.

The measurement is the pipeline runner's own (slimline.core.evaluate.Evaluator: size, the task's
fidelity, top-1 with labels, latency) and the budget test is ``flags_for``'s, so a candidate "within
budget" means what a pipeline step "not over budget" means. Built models are kept in the workspace's
step cache (keyed by the step's input, its parameters and the data), so a repeated search reuses them.

A language model on a text file is measured as an LM run measures it (slimline.core.lm.evaluate.LMEvaluator:
perplexity on the run's windows vs the original's, agreement, KL, greedy generations and their decode speed);
its budget is judged on the measured increase itself (slimline.core.sensitivity.metric.lm_budget), stricter
than a pipeline step's flag, which needs the whole 95 % interval above the budget.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import BaseModel

from slimline.core.cache import StepCache, handle_from_record, step_key
from slimline.core.evaluate import Evaluator, flags_for
from slimline.core.handle import ModelHandle
from slimline.core.pipeline import Evaluation
from slimline.core.plugin import CancelToken
from slimline.core.results import Measurement, StepResult
from slimline.core.search.models import Candidate, CandidateKind, Objective
from slimline.core.sensitivity.metric import PPL_KEY, lm_budget
from slimline.core.sensitivity.models import EndMetric
from slimline.core.sensitivity.prepare import Prepared, data_fingerprint
from slimline.core.sensitivity.protocol import KEEP, Layerwise

LAYERWISE_TAG = "#layerwise"   # cache keys of layer-wise builds differ from a pipeline step's (no guardrail)


class CandidateSpec(BaseModel):
    """What to build: plain data, so an engine can ship it to another process."""

    index: int
    kind: CandidateKind
    label: str
    settings: dict[str, str]


class CandidateEvaluator:
    """Measures the original once, then candidates one at a time against it."""

    def __init__(self, prep: Prepared, lw: Layerwise, evaluation: Evaluation, workspace: Path,
                 objective: Objective, cancel: CancelToken | None = None) -> None:
        self.prep, self.lw, self.evaluation, self.objective = prep, lw, evaluation, objective
        self.cancel = cancel or CancelToken()
        ev = getattr(prep.bundle, "eval", None)
        self.evaluator = Evaluator(evaluation, eval_data=ev, threads=prep.threads, device="cpu")
        text = getattr(prep.bundle, "text", None)
        if prep.windows is not None and text is not None:   # a language model: the LM run's own measurement
            from slimline.core.lm.evaluate import LMEvaluator
            from slimline.core.lm.evaluate import prepare as lm_data

            self.evaluator.lm = LMEvaluator(lm_data(prep.model, evaluation.lm, text), evaluation.lm,
                                            threads=evaluation.latency.threads or prep.threads)
            self.evaluator.task = prep.probe.task
        self.original = self._measure(prep.model)
        self.cache = StepCache(Path(workspace) / "cache")
        self._input_hash = prep.step_input.content_hash()
        self._data_fp = data_fingerprint(getattr(prep.bundle, "calibration", None)) \
            if prep.plugin_cls.needs_data else ""

    def _measure(self, handle: ModelHandle) -> Measurement:
        from slimline.core.runtime import clear_session_cache

        try:
            m = self.evaluator.evaluate(handle, self.cancel, latency=False)
            if handle.capabilities.run and self.evaluator.lm is None:   # (an LM's speed: its generations)
                # a few timed runs each, so the Pareto chart has a latency axis too
                m = m.model_copy(update={"latency": self.evaluator.latency(handle, cancel=self.cancel)})
            return m
        finally:
            clear_session_cache()

    @property
    def metric_name(self) -> str:
        """The verification's headline metric with its data, e.g. "top-1 on eval.npz (n=449)"."""
        acc, fid, lm = self.original.accuracy, self.original.fidelity, self.original.lm
        if lm is not None:
            return f"{PPL_KEY} vs original on {lm.dataset} (n={lm.windows} windows)"
        if acc is not None:
            return f"top-1 on {acc.dataset} (n={acc.n})"
        if fid is not None:
            what = PPL_KEY if PPL_KEY in fid.extra else (fid.metric or "mean cosine")
            return f"{what} vs original on {fid.dataset or fid.input_kind} (n={fid.n})"
        return "no metric (no evaluation data)"

    @property
    def baseline(self) -> float:
        acc, fid = self.original.accuracy, self.original.fidelity
        if self.original.lm is not None:
            return 0.0
        if acc is not None:
            return float(acc.top1)
        if fid is not None and PPL_KEY in fid.extra:
            return 0.0
        return float(fid.value) if fid is not None and fid.value is not None else 0.0

    @property
    def higher_is_better(self) -> bool:
        acc, fid = self.original.accuracy, self.original.fidelity
        if self.original.lm is not None:
            return False
        if acc is not None or fid is None:
            return True
        return PPL_KEY not in fid.extra and fid.higher_is_better

    def original_result(self) -> StepResult:
        return StepResult.from_measurement(self.original, step_id="original", plugin="",
                                           title=f"Original ({self.prep.model.name})", model=self.prep.model)

    def build(self, settings: dict[str, str]) -> ModelHandle:
        """The candidate's model, from the workspace's step cache when it was built before."""
        if not any(v != KEEP for v in settings.values()):
            return self.prep.step_input
        params = self.lw.params_for(settings)
        key = step_key(self._input_hash, self.prep.plugin_cls.id + LAYERWISE_TAG, self.prep.plugin_cls.version,
                       params, self._data_fp, 0)
        rec = self.cache.load(key)
        if rec is None:
            work = self.cache.work_dir(key)
            try:
                handle = self.lw.build(settings, work / "model")
                rec = self.cache.commit(key, work, {"model": handle.model_dump(mode="json"), "metrics": {},
                                                    "notes": ["built layer by layer (budgeted search)"],
                                                    "warnings": [], "tables": {}})
            except BaseException:
                self.cache.clean_temp(os.getpid())
                raise
        return handle_from_record(rec)

    def evaluate(self, spec: CandidateSpec) -> tuple[StepResult, Candidate]:
        """Build, measure and judge one candidate (its StepResult for the run record, its search row)."""
        t0 = time.perf_counter()
        self.cancel.raise_if_cancelled()
        handle = self.build(spec.settings)
        m = self._measure(handle)
        flags, reasons = flags_for(m, self.original, self.original, self.evaluation)
        within = "over_budget" not in flags
        why = "; ".join(r for r in reasons if "budget" in r or "drop" in r)
        vs = m.lm.vs_original if m.lm is not None else None
        if vs is not None:   # a language model: the measured increase itself must be within the budget
            within, why = lm_budget(vs.increase, vs.agreement, vs.kl_topk, self.evaluation.budgets)
            if not within and "over_budget" not in flags:
                flags.append("over_budget")
                reasons.append(f"language model: {why} (the search's rule: the measured increase, not its interval)")
        metric = end_metric(m, self.original, within, why)
        step_id = f"c{spec.index:02d}"
        labels = {lv.key: lv.label for lv in self.lw.levels}
        changed = {k: v for k, v in spec.settings.items() if v != KEEP}
        objective = objective_value(m, self.objective)
        result = StepResult.from_measurement(
            m, step_id=step_id, plugin=self.prep.plugin_cls.id, title=spec.label, model=handle,
            metrics={"search_candidate": float(spec.index), "layers_changed": float(len(changed)),
                     "objective": objective},
            notes=[f"{spec.kind} candidate: {describe(changed, labels, len(self.lw.layers))}"],
            warnings=reasons, flags=flags, duration_s=time.perf_counter() - t0,
            tables={"settings": [{"layer": k, "level": v, "label": labels.get(v, v)} for k, v in changed.items()]})
        cand = Candidate(index=spec.index, step_id=step_id, kind=spec.kind, label=spec.label, settings=changed,
                         params=self.lw.params_for(spec.settings), bytes_on_disk=m.size.bytes_on_disk,
                         zip_bytes=m.size.zip_bytes, latency_p50_ms=_p50(m), objective=objective, metric=metric,
                         within_budget=within, reason=metric.reason)
        return result, cand


def evaluate_candidate(spec: CandidateSpec, evaluator: CandidateEvaluator) -> tuple[StepResult, Candidate]:
    """The one entry point for a candidate (the integrator routes this through the engine layer)."""
    return evaluator.evaluate(spec)


def objective_value(m: Measurement, objective: Objective) -> float:
    gen = m.lm.generation if m.lm is not None else None
    if objective == "latency" and gen is not None:   # a language model: ms per decoded token (median over prompts)
        return 1000.0 / gen.decode_tokens_per_s if gen.decode_tokens_per_s > 0 else float("inf")
    if objective == "latency":
        p50 = _p50(m)
        return float(p50) if p50 is not None else float("inf")
    if objective == "compressed" and m.size.zip_bytes is not None:
        return float(m.size.zip_bytes)
    return float(m.size.bytes_on_disk)


def _p50(m: Measurement) -> float | None:
    gen = m.lm.generation if m.lm is not None else None
    if gen is not None and gen.decode_tokens_per_s > 0:   # an LM: ms per decoded token
        return 1000.0 / gen.decode_tokens_per_s
    lat = m.latency or {}
    if not lat:
        return None
    first = sorted(lat, key=lambda k: int(k) if str(k).isdigit() else 10**9)[0]
    return float(lat[first].p50_ms)


def end_metric(m: Measurement, original: Measurement, within: bool, reason: str = "") -> EndMetric:
    """The task's headline figure of a measured variant vs the original (as the sensitivity ranking names it)."""
    fid, fid0 = m.fidelity, original.fidelity
    vs = m.lm.vs_original if m.lm is not None else None
    if vs is not None:   # a language model: perplexity increase; continuous fidelity: KL (top-k + rest)
        return EndMetric(value=float(vs.increase), loss=float(vs.increase), fidelity_loss=float(vs.kl_topk),
                         within_budget=within, reason=reason)
    fid_loss = 1.0 - float(fid.mean_cosine) if fid is not None else 1.0
    if m.accuracy is not None and original.accuracy is not None:
        value = float(m.accuracy.top1)
        return EndMetric(value=value, loss=float(original.accuracy.top1) - value, fidelity_loss=fid_loss,
                         within_budget=within, reason=reason)
    if fid is not None and fid.value is not None:
        ppl = fid.extra.get(PPL_KEY)
        if ppl is not None:
            return EndMetric(value=float(ppl), loss=float(ppl), fidelity_loss=fid_loss, within_budget=within,
                             reason=reason)
        base = float(fid0.value) if fid0 is not None and fid0.value is not None else float(fid.value)
        value = float(fid.value)
        loss = (base - value) if fid.higher_is_better else (value - base)
        return EndMetric(value=value, loss=loss, fidelity_loss=fid_loss, within_budget=within, reason=reason)
    return EndMetric(value=float("nan"), loss=float("nan"), fidelity_loss=fid_loss, within_budget=within,
                     reason=reason or "not measured")


def describe(settings: dict[str, str], labels: dict[str, str], total: int) -> str:
    """"3 of 6 layers changed: conv1 → INT8, fc1 → INT8, …" (what a candidate is, in words)."""
    if not settings:
        return f"no layer changed (of {total})"
    parts = [f"{k} → {labels.get(v, v)}" for k, v in list(settings.items())[:8]]
    more = f", … {len(settings) - 8} more" if len(settings) > 8 else ""
    return f"{len(settings)} of {total} layers changed: " + ", ".join(parts) + more


__all__ = ["CandidateEvaluator", "CandidateSpec", "describe", "end_metric", "evaluate_candidate", "objective_value"]
