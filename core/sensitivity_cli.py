"""`slimline sensitivity MODEL --data D --step S`: which layers cost the metric, as a ranked table.

The analysis runs in a child process (slimline.core.sensitivity.job) with progress on stderr and
Ctrl-C to cancel; the table (or ``--json``) goes to stdout. Results are cached in the workspace by the
content of the model, the data and the settings, so a second call is instant.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from slimline.core.errors import SlimlineError

STEPS_HELP = ("quantize_dynamic | quantize_static | quantize_weight_only (LLMs) | prune (magnitude) | "
              "prune_structured | lowrank, or a plugin id")


def add_common(p: Any) -> None:
    """Arguments shared by `sensitivity` and `search`."""
    p.add_argument("model", help="model file or folder (a torch model is converted to ONNX for quantize steps)")
    p.add_argument("--data", help="evaluation data (.npz, .csv, image folder, .txt); else the pipeline's, else "
                                  "RANDOM inputs (a smoke check, said so)")
    p.add_argument("--train-data", help="training/calibration data (static INT8 calibrates on it)")
    p.add_argument("--step", required=True, help=STEPS_HELP)
    p.add_argument("--params", default="", help="the step's parameters as JSON (default: its defaults, or the "
                                               "first step of this kind in --pipeline)")
    p.add_argument("--pipeline", help="take the evaluation settings (task, budgets, data) and the step's "
                                      "parameters from this pipeline file")
    p.add_argument("--levels", nargs="+", help="levels to try (e.g. 0.5 0.7 for sparsity); default: all the step has")
    p.add_argument("--top-k", type=int, default=8, help="layers measured end to end (-1 = all, 0 = cheap only)")
    p.add_argument("--rows", type=int, default=256, help="evaluation rows for the ranking (default 256; a language "
                                                          "model: text windows)")
    p.add_argument("--windows", type=int, help="language models: text windows the evaluation scores (default: the "
                                               "pipeline's, else 24); the ranking uses the first --rows of them")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = all cores)")
    p.add_argument("--workspace", help="workspace for the cache, the conversions and the run history")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE", help="value for a dynamic input dim")
    p.add_argument("--trust", action="store_true", help="allow loading pickled code from the model file")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def add_parser(sub: Any) -> None:
    s = sub.add_parser("sensitivity", help="rank the layers by how much changing each one costs the metric",
                       description="Per-layer sensitivity of one step on your data: cheap scores for every layer "
                                   "(error at the layer's output, weight error), then the task's end metric for "
                                   "the top candidates; each row says which was used.")
    add_common(s)
    s.add_argument("--mode", choices=["alone", "all_but", "both"], default="",
                   help="alone: each layer alone changed; all_but: every layer but this one (what excluding it "
                        "recovers); default: both for quantize steps, alone otherwise")
    s.add_argument("--no-cache", action="store_true", help="recompute even when a cached result exists")
    s.add_argument("--limit", type=int, default=40, help="rows to print (default 40; --json prints all)")


def spec_from_args(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """(job spec without settings, the step's params) from the shared arguments."""
    from slimline.core.cli import _dims
    from slimline.core.history import default_workspace
    from slimline.core.sensitivity.prepare import step_id

    evaluation: dict[str, Any] = {}
    params: dict[str, Any] = {}
    if args.pipeline:
        from slimline.core.pipeline import load_pipeline

        pipe = load_pipeline(args.pipeline)
        evaluation = pipe.evaluation.model_dump(mode="json")
        found = next((s for s in pipe.steps if s.plugin == step_id(args.step)), None)
        if found is not None:
            params = dict(found.params)
    if args.params:
        try:
            params = json.loads(args.params)
        except ValueError as exc:
            raise SlimlineError(f"--params is not JSON: {exc}", subject="--params",
                                hint='write e.g. --params \'{"per_channel": false}\'') from None
        if not isinstance(params, dict):
            raise SlimlineError("--params must be a JSON object", subject="--params")
    if getattr(args, "windows", None):
        lm = dict(evaluation.get("lm") or {})
        lm["window_count"] = args.windows
        evaluation = {**evaluation, "lm": lm}
    workspace = Path(args.workspace) if args.workspace else default_workspace()
    spec = {"model_path": str(Path(args.model).resolve()), "trust": args.trust, "dims": _dims(args.dim),
            "data_path": str(Path(args.data).resolve()) if args.data else None,
            "train_path": str(Path(args.train_data).resolve()) if args.train_data else None,
            "evaluation": evaluation, "workspace": str(workspace)}
    return spec, params


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from slimline.core.sensitivity import job
    from slimline.core.sensitivity.models import SensitivityResult, SensitivitySettings
    from slimline.core.sensitivity.prepare import default_modes

    spec, params = spec_from_args(args)
    modes = {"both": ["alone", "all_but"], "alone": ["alone"], "all_but": ["all_but"]}.get(args.mode) \
        or default_modes(args.step)
    settings = SensitivitySettings(step=args.step, params=params, levels=args.levels, modes=modes,
                                   top_k=args.top_k, max_rows=args.rows, threads=args.threads)
    spec.update(settings=settings.model_dump(mode="json"), use_cache=not args.no_cache)
    final = job.wait_cli(job.start(job.SENSITIVITY_TASK, spec))
    code = exit_code(final)
    if code:
        return code
    result = SensitivityResult.model_validate(final.result)
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), indent=1))
    else:
        print(render_ranking(result, limit=args.limit))
    return 0


def exit_code(final: Any) -> int:
    """0 when the job finished; else the failure printed (message, hint) and 1, or 130 when cancelled."""
    from slimline.core.results import DoneEvent, FailedEvent

    if isinstance(final, DoneEvent) and final.result is not None:
        return 0
    if isinstance(final, FailedEvent):
        where = final.subject or final.step_id
        print(f"error: {where + ': ' if where else ''}{final.message}", file=sys.stderr)
        if final.hint:
            print(f"  → {final.hint}", file=sys.stderr)
        return 1
    return 130


def _num(v: float | None, spec: str = ".4g") -> str:
    return "-" if v is None else format(v, spec)


def render_ranking(result: Any, limit: int = 40) -> str:
    """The ranked table as text (what `slimline sensitivity` prints)."""
    from slimline.core.render import table

    head = result.default_level
    lines = [f"sensitivity of {Path(result.model).name} to {result.step_title or result.step} "
             f"({'cached, ' if result.cached else ''}{result.seconds:.1f} s)",
             f"task: {result.task} ({result.task_reason})",
             f"metric: {result.metric}; original {result.baseline:.4f}"
             + (f"; every layer at {head}: {result.uniform.value:.4f}" if result.uniform is not None else ""),
             f"ranked by: {result.ranked_by}"]
    if result.cheap_vs_end is not None:
        lines.append(f"cheap score vs end metric on the measured layers: Spearman {result.cheap_vs_end:+.2f}")
    rows = []
    for r in sorted(result.rows, key=lambda r: r.rank)[:limit]:
        lv = r.level(head)
        rows.append([r.rank, r.layer, r.tensor, r.op, f"{r.params:,}", _num(r.score), _num(r.fidelity_score, ".3g"),
                     r.source,
                     _num(lv.weight_error if lv else None), _num(lv.output_error if lv else None),
                     _num(lv.alone.value if lv and lv.alone else None),
                     _num(lv.all_but.value if lv and lv.all_but else None)])
    lines.append("")
    lines.append(table(["#", "layer", "tensor", "op", "params", "score", "Δ fidelity", "source", "weight err",
                        "output err", "alone", "all but"], rows, align="rllllrrlrrrr"))
    fid = ("KL(original ‖ variant), nats/token (top-k + rest, a lower bound)" if result.task == "token_logits"
           else "the same in 1 − output cosine")
    lines.append("score: the metric's loss in its own units (end_metric), or the relative error (cheap scores); "
                 f"Δ fidelity: {fid}; alone / all but: the metric with only this layer "
                 f"changed / every layer at {head} but this one")
    if len(result.rows) > limit:
        lines.append(f"… {len(result.rows) - limit} more (--limit, or --json)")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)
