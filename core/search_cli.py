"""`slimline search MODEL --data D --step S --max-accuracy-drop 0.01`: the most compact model within budget.

The budget is the task's (the pipeline's ``evaluation.budgets``: accuracy drop with labels, pooled cosine
for embeddings, perplexity increase for language models, relative L2 for maps); flags override fields.
Every candidate becomes a variant in the workspace's run history (`slimline report RUN` shows the ranking
and the path). Runs in a child process: progress on stderr, Ctrl-C cancels.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from slimline.core.sensitivity_cli import add_common, exit_code, spec_from_args

BUDGET_FLAGS = {"max_accuracy_drop": "top-1 drop allowed, as a fraction (0.01 = 1 point)",
                "min_cosine": "mean output cosine (class scores without labels, generic outputs)",
                "embedding_min_cosine": "pooled cosine of an embedding model",
                "token_max_perplexity_increase": "language models: relative perplexity increase (0.05 = +5%%)",
                "token_min_agreement": "language models: next-token agreement (0 = shown, not enforced)",
                "token_max_kl": "language models: KL to the original, nats/token (a lower bound)",
                "dense_map_max_rel_l2": "dense maps: relative L2", "generic_max_rel_l2": "generic outputs: rel. L2"}


def add_parser(sub: Any) -> None:
    s = sub.add_parser("search", help="find per-layer settings that meet a metric budget with the smallest model",
                       description="Budgeted search: greedy from the sensitivity ranking (exclusions, per-layer "
                                   "sparsity or rank), every candidate verified end to end and kept as a variant.")
    add_common(s)
    s.add_argument("--objective", choices=["size", "compressed", "latency"],
                   help="what to minimise (default: compressed size for magnitude pruning, else size on disk)")
    s.add_argument("--max-candidates", type=int, default=14, help="end-to-end evaluations, uniform presets "
                                                                   "included (default 14)")
    s.add_argument("--latency-batch", type=int, default=1)
    s.add_argument("--latency-runs", type=int, default=20)
    s.add_argument("--budget", type=float, help="the task's own budget: perplexity increase for a language model "
                   "(0.05 = +5%%), top-1 drop with labels, pooled cosine for embeddings, mean cosine for class "
                   "scores, relative L2 for maps and generic outputs (the flags below set one field each)")
    for name, text in BUDGET_FLAGS.items():
        s.add_argument("--" + name.replace("_", "-"), type=float, help=text)


def cmd_search(args: argparse.Namespace) -> int:
    from slimline.core.pipeline import Evaluation
    from slimline.core.search.models import SearchResult, SearchSettings
    from slimline.core.sensitivity import job

    spec, params = spec_from_args(args)
    ev = Evaluation.model_validate(spec["evaluation"] or {})
    overrides = {k: getattr(args, k) for k in BUDGET_FLAGS if getattr(args, k) is not None}
    if overrides:
        ev = ev.model_copy(update={"budgets": ev.budgets.model_validate({**ev.budgets.model_dump(), **overrides})})
    settings = SearchSettings(step=args.step, params=params, objective=args.objective, levels=args.levels,
                              budget=args.budget,
                              max_candidates=args.max_candidates, top_k=args.top_k, sensitivity_rows=args.rows,
                              latency_batch=args.latency_batch, latency_runs=args.latency_runs, threads=args.threads)
    spec.update(evaluation=ev.model_dump(mode="json"), settings=settings.model_dump(mode="json"))
    final = job.wait_cli(job.start(job.SEARCH_TASK, spec))
    code = exit_code(final)
    if code:
        return code
    result = SearchResult.model_validate(final.result)
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), indent=1))
    else:
        print(render_search(result, spec["workspace"]))
    return 0 if result.reachable else 3


def render_search(result: Any, workspace: str = "") -> str:
    from slimline.core.render import fmt_bytes, table

    rows = []
    for c in result.candidates:
        mark = "★" if c.chosen else ("u" if c.index == result.best_uniform else "")
        lat = "-" if c.latency_p50_ms is None else f"{c.latency_p50_ms:.3f}"
        rows.append([mark, c.index, c.kind, c.label[:70], fmt_bytes(c.bytes_on_disk), fmt_bytes(c.zip_bytes), lat,
                     f"{c.metric.value:.4f}", "yes" if c.within_budget else "no"])
    over = [f"  #{c.index} over budget: {c.reason}" for c in result.candidates if not c.within_budget and c.reason]
    lines = [f"budgeted search: {result.step_title or result.step} on {Path(result.model).name}, objective "
             f"{result.objective}, budget {result.budget} ({result.seconds:.0f} s)",
             f"metric: {result.metric}; original {result.baseline:.4f}", "",
             table(["", "#", "kind", "candidate", "size", "zip", "p50 ms", "metric", "in budget"], rows,
                   align="lrllrrrrl"), *over, "", result.verdict]
    if result.run_id:
        lines.append(f"run {result.run_id}: every candidate is a variant (Results tab); "
                     f"`slimline report {result.run_id}{' --workspace ' + workspace if workspace else ''}` "
                     "shows the ranking and the path")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)
