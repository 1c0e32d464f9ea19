"""What a search concludes and records: the verdict in words, the recipe of the chosen variant.

Kept apart from the walk (slimline.core.search.run) so the rules for "chosen", "best uniform" and
"unreachable" read in one place.
"""
from __future__ import annotations

from typing import Any

from slimline.core.pipeline import Evaluation
from slimline.core.results import RunRecord, StepResult
from slimline.core.search.evaluate import CandidateEvaluator
from slimline.core.search.models import Candidate, Objective, SearchResult, SearchSettings

# The budget field that "the budget" means for each task (``slimline search --budget X``).
BUDGET_FIELDS = {"token_logits": "token_max_perplexity_increase", "embedding": "embedding_min_cosine",
                 "classification": "min_cosine", "dense_map": "dense_map_max_rel_l2", "generic": "generic_max_rel_l2"}


def with_budget(ev: Evaluation, value: float | None, task: str, labelled: bool) -> Evaluation:
    """``ev`` with the task's headline budget set to ``value`` (top-1 drop when the rows have labels)."""
    if value is None:
        return ev
    field = "max_accuracy_drop" if labelled else BUDGET_FIELDS.get(task, "generic_max_rel_l2")
    budgets = ev.budgets.model_validate({**ev.budgets.model_dump(), field: value})
    return ev.model_copy(update={"budgets": budgets})


def budget_words(task: str, labelled: bool, ev: Evaluation) -> str:
    b = ev.budgets
    if labelled:
        return f"top-1 drop ≤ {b.max_accuracy_drop * 100:.2f} points"
    return {"classification": f"mean output cosine ≥ {b.min_cosine}",
            "embedding": f"pooled cosine ≥ {b.embedding_min_cosine}",
            "dense_map": f"relative L2 ≤ {b.dense_map_max_rel_l2} (positives IoU ≥ {b.dense_map_min_positives_iou})",
            "token_logits": f"next-token agreement ≥ {b.token_min_agreement}, KL ≤ {b.token_max_kl}, perplexity "
                            f"increase ≤ {b.token_max_perplexity_increase * 100:.1f} %",
            }.get(task, f"relative L2 ≤ {b.generic_max_rel_l2}")


def fmt_objective(value: float, objective: Objective) -> str:
    from slimline.core.render import fmt_bytes

    return f"{value:.3f} ms p50" if objective == "latency" else fmt_bytes(value)


def verdict(cands: list[Candidate], settings: SearchSettings, sens: Any, prep: Any, objective: Objective,
             ev: Evaluation, cev: CandidateEvaluator) -> SearchResult:
    within = [c for c in cands if c.within_budget]
    labelled = cev.original.accuracy is not None
    task = (cev.original.fidelity.task if cev.original.fidelity is not None else None) or prep.probe.task.task
    budget = f"{budget_words(task, labelled, ev)} vs the original on {cev.metric_name.split(' on ', 1)[-1]}"
    uniform = [c for c in within if c.kind == "uniform"]
    best_uniform = min(uniform, key=lambda c: (c.objective, c.metric.loss)) if uniform else None
    chosen = min(within, key=lambda c: (c.objective, c.metric.loss)) if within else None
    unit = "ms" if objective == "latency" else "bytes"
    base = SearchResult(step=settings.step, step_title=prep.plugin_cls.title, objective=objective,
                        objective_unit=unit, budget=budget, metric=cev.metric_name, baseline=cev.baseline,
                        higher_is_better=cev.higher_is_better,
                        settings=settings, sensitivity=sens,
                        chosen=chosen.index if chosen else None,
                        best_uniform=best_uniform.index if best_uniform else None, reachable=chosen is not None,
                        notes=[f"verified on {getattr(prep.bundle.eval, 'name', 'random inputs')} "
                               f"({'all rows' if not ev.max_rows else f'≤ {ev.max_rows} rows'}); the ranking on "
                               f"{sens.n} rows", *sens.notes])
    lm = cev.original.lm
    if lm is not None:
        base.notes.insert(0, f"original: {lm.perplexity_words()}; a candidate is within budget when its measured "
                             "perplexity increase is (not only its 95 % interval, as a pipeline step's flag)")
    if chosen is None:
        gentlest = min(cands, key=lambda c: c.metric.loss) if cands else None
        how = (f"; the gentlest candidate ({gentlest.label}) gives {gentlest.metric.value:.4f} "
               f"({gentlest.reason or 'over budget'})") if gentlest else ""
        base.verdict = (f"budget unreachable: none of the {len(cands)} candidates of {prep.plugin_cls.title} "
                        f"meets {budget}{how}. Loosen the budget, or try another step.")
        return base
    cmp = ""
    if best_uniform is not None and best_uniform.index != chosen.index:
        cmp = (f"; {chosen.objective / best_uniform.objective:.2f}× the best uniform preset within budget "
               f"({best_uniform.label}: {fmt_objective(best_uniform.objective, objective)})")
    elif best_uniform is not None:
        cmp = "; the uniform preset itself is the most compact candidate within budget"
    else:
        cmp = "; no uniform preset meets the budget"
    base.verdict = (f"budget met: {chosen.label} — {objective} {fmt_objective(chosen.objective, objective)}, "
                    f"{cev.metric_name.split(' (n=')[0]} {chosen.metric.value:.4f}{cmp}")
    return base


def recipe(settings: SearchSettings, prep: Any, ev: Evaluation, chosen: Candidate | None,
            objective: Objective) -> dict[str, Any]:
    """The pipeline that makes the chosen variant (convert first when the step needed it)."""
    steps = []
    if prep.step_input.path != prep.model.path:
        steps.append({"id": "s1", "plugin": "builtin.convert_onnx", "plugin_version": "1", "enabled": True,
                      "params": {}})
    if chosen is not None:
        steps.append({"id": f"s{len(steps) + 1}", "plugin": settings.step,
                      "plugin_version": str(prep.plugin_cls.version), "enabled": True, "params": chosen.params})
    what = chosen.label if chosen is not None else "running"
    return {"format": "slimline.pipeline", "schema_version": 1,
            "name": f"budgeted search: {prep.plugin_cls.title}, objective {objective} ({what})",
            "steps": steps, "evaluation": ev.model_dump(mode="json")}


def ended(record: RunRecord, exc: BaseException) -> None:
    from slimline.core.errors import Cancelled
    from slimline.core.results import RunError

    if isinstance(exc, Cancelled):
        record.status = "cancelled"
        return
    record.status = "failed"
    record.error = RunError(message=str(getattr(exc, "message", "") or f"{type(exc).__name__}: {exc}"),
                            hint=str(getattr(exc, "hint", "") or "see the log"), subject="budgeted search")


def finish(record: RunRecord, results: list[StepResult], result: SearchResult, settings: SearchSettings,
            prep: Any, ev: Evaluation, objective: Objective) -> None:
    chosen = result.candidate(result.chosen)
    record.status = "done"
    record.pipeline = recipe(settings, prep, ev, chosen, objective)
    for r in results:
        if chosen is not None and r.step_id == chosen.step_id:
            r.metrics["search_chosen"] = 1.0
            r.notes.insert(0, f"chosen by the budgeted search: {result.verdict}")
            record.final_model = r.model


__all__ = ["BUDGET_FIELDS", "budget_words", "with_budget", "ended", "finish", "fmt_objective", "recipe", "verdict"]
