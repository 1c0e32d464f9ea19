"""Budgeted search on an LLM and on a transformer encoder: per-layer settings vs the best uniform preset.

1. SmolLM2-135M-Instruct (the corpus's Q4_1 GGUF, dequantized to float32 and built into the genai builder's
   fp32 folder by benchmarks.bench_llm_weight_only, cached under ~/.cache/slimline/bench/llm/smollm2-work/fp32)
   with ``builtin.quantize_weight_only`` (int4 preset: RTN asymmetric blocks of 32, smoothing α 0.5, int8
   activations) layer by layer: units = the 30 decoder blocks (each block's 7 MatMuls share one setting) and
   the LM head with its tied embedding; levels float / INT8 / INT4. Text: the bench's eval.txt (the first part of
   the corpus's pydoc sentences); the step's calibration (smoothing) reads calibration.txt, the rest, so the
   scored windows are not the calibration windows. Ranking: perplexity of each unit alone on the first
   RANK_WINDOWS windows × 128 tokens (the top TOP_K units by cheap score measured end to end); verification of
   every candidate: perplexity on VERIFY_WINDOWS windows × 128 tokens vs fp32, next-token agreement and KL
   shown; budget: perplexity increase ≤ BUDGET (the measured increase itself; agreement and KL not enforced unless
   SLIMLINE_BENCH_LLM_ALL_BUDGETS=1, the pipeline's defaults: agreement ≥ 0.9, KL ≤ 0.1).
2. all-MiniLM-L6-v2 (the corpus's HF folder, converted to ONNX by the convert step) with dynamic INT8 per node
   on the first 64 pydoc sentences at 64 tokens; budgets pooled cosine ≥ 0.99 and ≥ 0.995; ranking on 32 rows.
Both: objective size on disk; "best uniform" is the most compact uniform preset (every unit at one level)
within the same budget on the same windows / rows, evaluated by the same search.
Run: ``python -m benchmarks.bench_search_llm`` (≈ 30-60 min on 2 busy cores; needs the cached fp32 folder and
``make realmodels``). SLIMLINE_BENCH_SEARCH_LLM_CASES=smollm2,minilm picks cases.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import print_table, save_results

THREADS = int(os.environ.get("SLIMLINE_BENCH_THREADS", "2"))
BUDGET = float(os.environ.get("SLIMLINE_BENCH_LLM_BUDGET", "0.05"))
RANK_WINDOWS, VERIFY_WINDOWS, TOP_K, MAX_CANDIDATES = 8, 16, 4, 12
MINILM_BUDGETS = (0.99, 0.995)
ALL_BUDGETS = os.environ.get("SLIMLINE_BENCH_LLM_ALL_BUDGETS", "") == "1"
WORK = Path(os.environ.get("SLIMLINE_BENCH_CACHE", str(Path.home() / ".cache" / "slimline" / "bench"))) \
    / "llm" / "smollm2-work"
REPO = Path(__file__).resolve().parents[1]


def _rows(res: Any, fmt: Any, fid: str) -> list[str]:
    out = []
    for c in res.candidates:
        out.append(f"   {'★' if c.chosen else 'u' if c.index == res.best_uniform else ' '} {c.index:2d} "
                   f"{c.kind:8s} {c.label[:64]:64s} {fmt(c.bytes_on_disk):>10s} {c.metric.value:+.4f} "
                   f"{fid} {c.metric.fidelity_loss:.4f} {'ok' if c.within_budget else 'over: ' + c.reason[:90]}")
    return out


def _summary(name: str, res: Any, seconds: float, metric: str, baseline_bytes: int) -> tuple[list[Any], dict]:
    from slimline.core.render import fmt_bytes

    chosen, uniform = res.candidate(res.chosen), res.candidate(res.best_uniform)

    def fig(c: Any) -> str:
        if c is None:
            return "none within budget"
        return f"{fmt_bytes(c.bytes_on_disk)} ({c.bytes_on_disk / baseline_bytes:.3f}×), {metric} {c.metric.value:+.4f}"

    ratio = f"{chosen.bytes_on_disk / uniform.bytes_on_disk:.2f}×" if chosen and uniform else "—"
    row = [name, fig(chosen), fig(uniform), ratio, len(res.candidates), f"{seconds / 60:.1f} min",
           "yes" if res.reachable else "unreachable"]
    return [row], {"verdict": res.verdict, "budget": res.budget, "metric": res.metric, "seconds": seconds,
                 "candidates": [c.model_dump(mode="json") for c in res.candidates], "chosen": res.chosen,
                 "best_uniform": res.best_uniform, "notes": res.notes,
                 "ranking": [r.model_dump(mode="json") for r in (res.sensitivity.rows if res.sensitivity else [])],
                 "ranked_by": res.sensitivity.ranked_by if res.sensitivity else ""}


def smollm2(tmp: Path) -> tuple[list[Any], dict] | None:
    """(summary rows, results) of the LLM case, or None when its fp32 folder is missing."""
    from slimline.core.models import open_model
    from slimline.core.pipeline import Budgets, Evaluation, LMSettings
    from slimline.core.render import fmt_bytes
    from slimline.core.search.models import SearchResult, SearchSettings
    from slimline.core.sensitivity import job

    fp32 = WORK / "fp32" / "model.onnx"
    if not fp32.is_file():
        print(f"SmolLM2: skipped, {fp32} missing (run benchmarks.bench_llm_weight_only first)")
        return None
    model = open_model(fp32)
    # The budget is the perplexity increase alone (agreement and KL shown, not enforced);
    # SLIMLINE_BENCH_LLM_ALL_BUDGETS=1 keeps the pipeline's defaults (agreement ≥ 0.9, KL ≤ 0.1), which bind first.
    extra = {} if ALL_BUDGETS else {"token_min_agreement": 0.0, "token_max_kl": 100.0}
    ev = Evaluation(budgets=Budgets(token_max_perplexity_increase=BUDGET, **extra),
                    lm=LMSettings(window_length=128, window_count=VERIFY_WINDOWS, prompt_count=2, max_new_tokens=16))
    params = {"text_file": str(WORK / "calibration.txt"), "timing_runs": 0}
    settings = SearchSettings(step="quantize_weight_only", params=params, objective="size", top_k=TOP_K,
                              sensitivity_rows=RANK_WINDOWS, max_candidates=MAX_CANDIDATES, threads=THREADS)
    # in a child process, as `slimline search` runs it: a 135M LM's probes need a few GB, kept out of this process
    spec = {"model_path": str(fp32), "trust": False, "dims": {}, "data_path": str(WORK / "eval.txt"),
            "train_path": None, "evaluation": ev.model_dump(mode="json"), "workspace": str(tmp / "smollm2"),
            "settings": settings.model_dump(mode="json")}
    t0 = time.perf_counter()
    final = job.wait_cli(job.start(job.SEARCH_TASK, spec))
    if getattr(final, "result", None) is None:
        print(f"SmolLM2: the search failed: {getattr(final, 'message', final)}")
        return None
    res = SearchResult.model_validate(final.result)
    seconds = time.perf_counter() - t0
    base = sum(Path(f).stat().st_size for f in model.files or [model.path])
    print(f"\nSmolLM2-135M fp32 ({fmt_bytes(base)}), {res.budget}: {res.verdict} ({seconds / 60:.1f} min)")
    print("\n".join(_rows(res, fmt_bytes, "KL")))
    if res.sensitivity is not None:
        print(f"ranking ({res.sensitivity.ranked_by}; Spearman cheap vs end {res.sensitivity.cheap_vs_end}):")
        for r in res.sensitivity.rows[:10]:
            lv = r.level("int4")
            end = f"ppl {r.score:+.4f}  KL {r.fidelity_score:.4f}" if r.source == "end_metric" else "(not measured)"
            print(f"   {r.rank:2d} {r.layer:18s} {r.source:12s} {end:28s} output err "
                  f"{lv.output_error if lv else float('nan'):.4f}")
    for n in res.notes:
        print(f"   note: {n}")
    return _summary("SmolLM2-135M · weight-only 8/4-bit", res, seconds, "ppl", base)


def minilm(tmp: Path) -> tuple[list[Any], dict] | None:
    """Two budgets: the usual 0.99, and a stricter one the uniform preset misses (the search then excludes nodes)."""
    from slimline.core.data import DataBundle
    from slimline.core.models import open_model
    from slimline.core.pipeline import Budgets, Evaluation
    from slimline.core.render import fmt_bytes
    from slimline.core.search.models import SearchSettings
    from slimline.core.search.run import search

    sys.path.insert(0, str(REPO))
    from benchmarks.bench_real_embedding import corpus

    paths = corpus("minilm-l6-v2", "pydoc-sentences")
    if paths is None:
        print("MiniLM: skipped (make realmodels has not run)")
        return None
    lines = paths["pydoc-sentences"].read_text(encoding="utf-8").splitlines()[:64]
    (tmp / "sentences.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = open_model(paths["minilm-l6-v2"]).with_dims(sequence=64)
    data = DataBundle.from_paths(eval=tmp / "sentences.txt", model=model, max_length=64)
    rows: list[Any] = []
    out: dict[str, Any] = {}
    for cos in MINILM_BUDGETS:
        ev = Evaluation(budgets=Budgets(embedding_min_cosine=cos))
        t0 = time.perf_counter()
        res = search(model, data, SearchSettings(step="quantize_dynamic", objective="size", top_k=8,
                                                 sensitivity_rows=32, max_candidates=MAX_CANDIDATES, threads=THREADS,
                                                 latency_runs=5),
                     workspace=tmp / "minilm", evaluation=ev, data_paths=(str(tmp / "sentences.txt"), None))
        seconds = time.perf_counter() - t0
        step_input = res.sensitivity.step_input if res.sensitivity else model.path
        base = sum(p.stat().st_size for p in Path(step_input).parent.glob(Path(step_input).name + "*"))
        print(f"\nMiniLM-L6-v2 float ONNX ({fmt_bytes(base)}), {res.budget}: {res.verdict} ({seconds / 60:.1f} min)")
        print("\n".join(_rows(res, fmt_bytes, "1−cos")))
        got, doc = _summary(f"MiniLM-L6-v2 · dynamic INT8 per node (cosine ≥ {cos})", res, seconds, "cosine", base)
        rows += got
        out[str(cos)] = doc
    return rows, out


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    only = [c for c in os.environ.get("SLIMLINE_BENCH_SEARCH_LLM_CASES", "smollm2,minilm").split(",") if c]
    rows, out = [], {"threads": THREADS, "budget_perplexity": BUDGET, "rank_windows": RANK_WINDOWS,
                     "verify_windows": VERIFY_WINDOWS, "top_k": TOP_K}
    with tempfile.TemporaryDirectory(prefix="bench_search_llm_") as d:
        for name, fn in (("smollm2", smollm2), ("minilm", minilm)):
            if name in only:
                got = fn(Path(d))
                if got is not None:
                    rows += got[0]
                    out[name] = got[1]
    print_table(f"budgeted search vs the best uniform preset within the same budget (objective size; {THREADS} "
                f"thread(s); LLM: perplexity increase ≤ {BUDGET * 100:g} % on {VERIFY_WINDOWS} × 128-token windows"
                f"{', agreement ≥ 0.9, KL ≤ 0.1' if ALL_BUDGETS else ''}; encoder: pooled cosine ≥ 0.99 or 0.995, "
                "64 sentences)",
                ["model · step", "search (chosen)", "best uniform", "chosen / uniform", "candidates", "time",
                 "budget"], rows)
    print(f"results: {save_results('bench_search_llm', out)}")


if __name__ == "__main__":
    main()
