"""Budgeted search: the most compact per-layer settings whose end metric stays within the task's budget.

1. The sensitivity ranking of the step on the user's data (cached; slimline.core.sensitivity).
2. The greedy path from it (slimline.core.search.path): ever more compression, least damage per byte first.
3. End-to-end verification of candidates on the path: the uniform presets (every layer at one level, what
   the step does with plain parameters), a binary search for the last point on the path within the budget,
   then a refinement that skips the move that broke the budget and keeps adding the next ones.
4. The most compact verified candidate within the budget is chosen; if none is, the search says the budget
   is unreachable and shows how close the gentlest candidate came.

Every candidate is a variant: one run record (``runs/<run_id>/run.json``) holds the original and each
candidate as a step, so the Results tab's Pareto chart shows them with their settings; ``search.json``
beside it holds the ranking, the path and the verdict for the report.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slimline.core.handle import ModelHandle
from slimline.core.pipeline import Evaluation, LatencySettings
from slimline.core.plugin import CancelToken
from slimline.core.results import RunData, RunRecord, StepResult
from slimline.core.search.evaluate import CandidateEvaluator, CandidateSpec, evaluate_candidate
from slimline.core.search.models import SEARCH_FILE, Candidate, CandidateKind, Objective, SearchResult, SearchSettings
from slimline.core.search.path import damages, greedy_path, settings_after
from slimline.core.search.verdict import ended, finish, recipe, verdict, with_budget
from slimline.core.sensitivity.analyze import analyze
from slimline.core.sensitivity.models import SensitivitySettings
from slimline.core.sensitivity.prepare import default_modes, prepare, step_id

Progress = Callable[[float, str], None]
CandidateCallback = Callable[[Candidate], None]
# Steps whose savings only show once compressed (zeros stay in a dense file).
COMPRESSED_STEPS = ("builtin.prune_magnitude",)
UNIFORM_BISECT = 3   # halvings of the uniform preset's setting, for the fairest uniform baseline
FINALISTS = 3        # latency objective: the fastest candidates within budget, timed again interleaved


def default_objective(step: str) -> Objective:
    return "compressed" if step_id(step) in COMPRESSED_STEPS else "size"


def search(model: ModelHandle, data: Any, settings: SearchSettings, *, workspace: Path,
           evaluation: Evaluation | None = None, cancel: CancelToken | None = None, progress: Progress | None = None,
           on_candidate: CandidateCallback | None = None, data_paths: tuple[str | None, str | None] = (None, None),
           run_id: str | None = None) -> SearchResult:
    """Run the search; the run record and ``search.json`` are written to ``workspace/runs/<run_id>/``."""
    from slimline.core.history import new_run_id, run_dir, save_run
    from slimline.core.metrics import environment

    t0 = time.perf_counter()
    cancel = cancel or CancelToken()
    say = progress or (lambda f, m: None)
    evaluation = evaluation or Evaluation()
    settings = settings.model_copy(update={"step": step_id(settings.step)})
    objective = settings.objective or default_objective(settings.step)
    sens = analyze(model, data, SensitivitySettings(
        step=settings.step, params=settings.params, levels=settings.levels, modes=default_modes(settings.step),
        top_k=settings.top_k, max_rows=settings.sensitivity_rows, seed=settings.seed, threads=settings.threads),
        workspace=workspace, evaluation=evaluation, cancel=cancel, progress=lambda f, m: say(0.4 * f, m))
    evaluation = with_budget(evaluation, settings.budget, sens.task, sens.metric.startswith("top-1"))
    prep = prepare(model, data, settings.step, settings.params, workspace=workspace, evaluation=evaluation,
                   max_rows=settings.sensitivity_rows, threads=settings.threads, seed=settings.seed, cancel=cancel)
    run_id = run_id or new_run_id()
    try:
        lw = prep.layerwise()
        try:
            ev = evaluation.model_copy(update={"latency": LatencySettings(
                batch_sizes=[settings.latency_batch], runs=settings.latency_runs, warmup=3,
                threads=settings.threads)})
            say(0.42, "measuring the original")
            cev = CandidateEvaluator(prep, lw, ev, workspace, objective, cancel)
            record = RunRecord(run_id=run_id, created=time.strftime("%Y-%m-%dT%H:%M:%S"), status="running",
                               pipeline=recipe(settings, prep, ev, None, objective), model=model,
                               data=RunData(eval=data_paths[0], train=data_paths[1]), environment=environment(),
                               results=[cev.original_result()])
            save_run(workspace, record)
            walk = _Walk(cev, lw, record, workspace, settings.max_candidates, cancel, say, on_candidate)
            levels = [lv for lv in lw.levels if settings.levels is None or lv.key in settings.levels]
            moves = greedy_path([ly.name for ly in lw.layers], levels, damages(sens), lw.saved_bytes)
            try:
                walk.explore(moves, levels)
                if objective == "latency" and cev.evaluator.lm is None:   # (an LM: decode speed of its generations)
                    walk.retime_finalists(settings, getattr(prep.bundle, "eval", None))
            except BaseException as exc:   # a cancelled or failed search keeps the candidates it verified
                ended(record, exc)
                save_run(workspace, record)
                raise
            result = verdict(walk.candidates, settings, sens, prep, objective, ev, cev)
            if walk.retimed:
                result.notes.insert(0, "latency: candidates " + ", ".join(f"#{i}" for i in walk.retimed)
                                    + " (the fastest, the smallest and the best uniform within budget) timed again, "
                                    "interleaved in one session; the choice uses those figures")
            for c in walk.candidates:
                c.chosen = c.index == result.chosen
            result.candidates = walk.candidates
            finish(record, walk.results, result, settings, prep, ev, objective)
            save_run(workspace, record)
        finally:
            lw.close()
    finally:
        prep.close()
    result = result.model_copy(update={"run_id": run_id, "model": model.path, "seconds": time.perf_counter() - t0})
    from slimline.core.fsutil import atomic_write_text

    atomic_write_text(run_dir(workspace, run_id) / SEARCH_FILE, json.dumps(result.model_dump(mode="json"), indent=1))
    say(1.0, result.verdict)
    return result


class _Walk:
    """The candidates, evaluated in order, each recorded as it arrives (a killed search keeps its variants)."""

    def __init__(self, cev: CandidateEvaluator, lw: Any, record: RunRecord, workspace: Path, limit: int,
                 cancel: CancelToken, say: Progress, on_candidate: CandidateCallback | None) -> None:
        self.cev, self.lw, self.record, self.workspace, self.limit = cev, lw, record, workspace, limit
        self.cancel, self.say, self.on_candidate = cancel, say, on_candidate
        self.candidates: list[Candidate] = []
        self.results: list[StepResult] = []
        self._seen: dict[frozenset[tuple[str, str]], Candidate] = {}
        self.retimed: list[int] = []

    @property
    def left(self) -> int:
        return self.limit - len(self.candidates)

    def try_(self, settings: dict[str, str], kind: CandidateKind, label: str) -> Candidate | None:
        from slimline.core.history import save_run

        key = frozenset(settings.items())
        if key in self._seen:
            return self._seen[key]
        if self.left <= 0 or not settings:
            return None
        self.cancel.raise_if_cancelled()
        index = len(self.candidates) + 1
        self.say(0.45 + 0.53 * (index - 1) / self.limit, f"candidate {index}/{self.limit}: {label}")
        result, cand = evaluate_candidate(CandidateSpec(index=index, kind=kind, label=label, settings=settings),
                                          self.cev)
        self.candidates.append(cand)
        self.results.append(result)
        self._seen[key] = cand
        self.record.results.append(result)
        save_run(self.workspace, self.record)
        if self.on_candidate is not None:
            self.on_candidate(cand)
        return cand

    def explore(self, moves: list[Any], levels: list[Any]) -> None:
        names = [ly.name for ly in self.lw.layers]
        for lv in sorted(levels, key=lambda lv: lv.strength):   # the step's plain presets, for comparison
            self.try_({n: lv.key for n in names}, "uniform", f"uniform: every layer at {lv.label}")
        # bisecting the uniform preset may spend a third of what is left, never the path's share
        self.bisect_uniform(levels, names, rounds=min(UNIFORM_BISECT, max(0, self.left // 3)))
        total = len(moves)
        if not total:
            return

        def at(i: int) -> Candidate | None:
            s = settings_after(moves, i)
            return self.try_(s, "path", f"path {i}/{total}: {_count(s, self.lw)}")

        lo, hi = 0, total
        end = at(total)
        if end is not None and end.within_budget:
            return
        while hi - lo > 1 and self.left > 0:
            mid = (lo + hi) // 2
            c = at(mid)
            if c is None:
                break
            lo, hi = (mid, hi) if c.within_budget else (lo, mid)
        skip = {lo}   # the move that broke the budget: leave it out, keep adding the next ones
        n = lo + 1
        while n < total and self.left > 0:
            n += 1
            s = settings_after(moves, n, frozenset(skip))
            c = self.try_(s, "refine", f"refine: {_count(s, self.lw)} (skipping {len(skip)} move(s))")
            if c is None:
                break
            if not c.within_budget:
                skip.add(n - 1)


    def retime_finalists(self, settings: SearchSettings, data: Any, limit: int = FINALISTS) -> None:
        """Time the fastest and the smallest candidates within budget again, interleaved in one session.

        Why: each candidate was timed on its own, minutes apart; on a busy machine that ordering is noise.
        The choice by latency uses this interleaved timing (said in the notes)."""
        from slimline.core.metrics import measure_interleaved

        within = [c for c in self.candidates if c.within_budget]
        uniform = sorted((c for c in within if c.kind == "uniform"), key=lambda c: c.objective)[:1]
        picks = (sorted(within, key=lambda c: c.objective)[:limit] + sorted(within, key=lambda c: c.bytes_on_disk)[:2]
                 + uniform)   # the uniform baseline too: the verdict compares the chosen one with it
        finalists = list({c.index: c for c in picks}.values())
        if len(finalists) < 2:
            return
        self.say(0.97, f"timing the {len(finalists)} fastest/smallest candidates again, interleaved")
        models = {r.step_id: r.model for r in self.results}
        reports = measure_interleaved([models[c.step_id] for c in finalists], batch=settings.latency_batch,
                                      runs=max(2 * settings.latency_runs, 20), warmup=3, threads=settings.threads,
                                      dataset=data, cancel=self.cancel)
        for c, rep in zip(finalists, reports):
            c.latency_p50_ms = c.objective = float(rep.p50_ms)
        self.retimed = [c.index for c in finalists]

    def bisect_uniform(self, levels: list[Any], names: list[str], rounds: int = UNIFORM_BISECT) -> None:
        """The strongest uniform preset within the budget, to ``rounds`` halvings between the last one in budget
        and the first one over it (steps with a continuous setting only): the fair baseline for the search."""
        level_for = getattr(self.lw, "level_for", None)
        if level_for is None:
            return
        strength = {lv.key: lv.strength for lv in levels}
        done = [(strength[next(iter(c.settings.values()))], c.within_budget) for c in self.candidates
                if c.kind == "uniform" and next(iter(c.settings.values()), None) in strength]
        lo = max([s for s, ok in done if ok], default=0.0)
        over = [s for s, ok in done if not ok and s > lo]
        if not over:
            return
        hi = min(over)
        for _ in range(rounds):
            lv = level_for((lo + hi) / 2)
            c = self.try_({n: lv.key for n in names}, "uniform", f"uniform: every layer at {lv.label}")
            if c is None:
                return
            lo, hi = (lv.strength, hi) if c.within_budget else (lo, lv.strength)


def _count(settings: dict[str, str], lw: Any) -> str:
    labels = {lv.key: lv.label for lv in lw.levels}
    by: dict[str, int] = {}
    for lv in settings.values():
        by[labels.get(lv, lv)] = by.get(labels.get(lv, lv), 0) + 1
    return ", ".join(f"{n} layer{'s' if n != 1 else ''} at {k}" for k, n in by.items()) or "no layer changed"


__all__ = ["default_modes", "default_objective", "search"]  # default_modes: re-exported
