"""Budgeted search on the demo CNN: per-layer settings vs the uniform preset that meets the same budget.

Model: the bundled digits CNN (resources/demo); data: its held-out split (digits_eval.npz, n=449, real
labels); budget: the demo pipeline's, top-1 drop ≤ 1 point. For each step the search (``slimline search``'s
engine, in this process) ranks the layers on the first 256 rows, walks the greedy path and verifies every
candidate end to end on all 449 rows; the uniform presets (every layer at one level: what the step does with
its plain parameters) are evaluated by the same search, so "best uniform" is the most compact uniform
setting within the same budget on the same rows. Latency: the chosen model, the best uniform preset and
the original timed interleaved (slimline.core.metrics.measure_interleaved), batch 1, THREADS threads.

Steps: magnitude pruning (objective: zip-compressed size, where zeros pay), static INT8 (objective: size),
structured channel pruning (objective: latency; no fine-tuning, so the budget is tight).
Run: ``python -m benchmarks.bench_search`` (≈ 5-10 min on 2 busy cores); SLIMLINE_BENCH_SEARCH_STEPS=prune,...
picks cases. On a latency objective the "chosen / uniform" figure is the interleaved re-timing (the search's own
per-candidate timings are not interleaved), with the size ratio beside it.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import print_table, save_results

THREADS = int(os.environ.get("SLIMLINE_BENCH_THREADS", "1"))
BUDGET = 0.01
CASES = [("prune", "compressed", {}), ("quantize_static", "size", {}), ("prune_structured", "latency",
                                                                        {"importance": "magnitude"})]


def _latency(handles: list[Any], data: Any) -> tuple[list[float], bool]:
    from slimline.core.metrics import measure_interleaved

    reps = measure_interleaved(handles, batch=1, runs=60, warmup=10, threads=THREADS, dataset=data)
    return [r.p50_ms for r in reps], any(r.noisy for r in reps)


def main() -> None:
    from slimline.core.data import DataBundle
    from slimline.core.demo import demo_paths
    from slimline.core.models import open_model
    from slimline.core.pipeline import Budgets, Evaluation
    from slimline.core.render import fmt_bytes
    from slimline.core.search.models import SearchSettings
    from slimline.core.search.run import search

    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    p = demo_paths()
    model = open_model(p["torch"])
    data = DataBundle.from_paths(eval=p["eval"], train=p["train"], model=model)
    ev = Evaluation(budgets=Budgets(max_accuracy_drop=BUDGET))
    print(f"demo CNN {model.param_count:,} params; data {data.eval.describe()}; budget top-1 drop ≤ "
          f"{BUDGET * 100:.0f} point; ranking on 256 rows, verification on all rows; {THREADS} thread(s)")
    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_search_") as tmp:
        only = os.environ.get("SLIMLINE_BENCH_SEARCH_STEPS", "")   # e.g. "prune_structured" to rerun one case
        for step, objective, params in [c for c in CASES if not only or c[0] in only.split(",")]:
            t0 = time.perf_counter()
            res = search(model, data, SearchSettings(step=step, objective=objective, params=params, threads=THREADS,
                                                     max_candidates=16, latency_runs=20), workspace=Path(tmp),
                         evaluation=ev, data_paths=(str(p["eval"]), str(p["train"])))
            seconds = time.perf_counter() - t0
            chosen, uniform = res.candidate(res.chosen), res.candidate(res.best_uniform)
            print(f"\n{res.step_title}: {res.verdict} ({seconds:.0f} s, {len(res.candidates)} candidates)")
            for c in res.candidates:
                print(f"   {'★' if c.chosen else ' '} {c.index:2d} {c.kind:8s} {c.label[:70]:70s} "
                      f"size {fmt_bytes(c.bytes_on_disk):>9s} zip {fmt_bytes(c.zip_bytes):>9s} "
                      f"top-1 {c.metric.value:.4f} {'ok' if c.within_budget else 'over'}")
            lat: dict[str, float] = {}
            if chosen is not None:
                from slimline.core.history import load_run, run_dir

                record = load_run(run_dir(Path(tmp), res.run_id))
                handles = {"original": record.results[0].model}
                if res.sensitivity is not None and res.sensitivity.step_input != model.path:
                    from slimline.core.models import open_model as _open

                    handles["float ONNX"] = _open(res.sensitivity.step_input)   # what the step started from
                handles["chosen"] = record.step(chosen.step_id).model
                if uniform is not None:
                    handles["best uniform"] = record.step(uniform.step_id).model
                times, noisy = _latency(list(handles.values()), data.eval)
                lat = dict(zip(handles, times))
                if noisy:
                    lat["noisy"] = 1.0
            results[step] = {"verdict": res.verdict, "objective": objective, "seconds": seconds,
                             "candidates": [c.model_dump(mode="json") for c in res.candidates],
                             "chosen": res.chosen, "best_uniform": res.best_uniform, "latency_p50_ms": lat}

            def fig(c: Any, objective: str = objective) -> str:
                if c is None:
                    return "none within budget"
                size = c.zip_bytes if objective == "compressed" else c.bytes_on_disk
                return f"{fmt_bytes(size)}, top-1 {c.metric.value:.4f}"

            ratio = "—"
            if chosen is not None and uniform is not None:
                # latency: the interleaved re-timing above, not the per-candidate timing the search ranked by
                ratio = (f"{lat['chosen'] / lat['best uniform']:.2f}× p50 (interleaved), "
                         f"{chosen.bytes_on_disk / uniform.bytes_on_disk:.2f}× size" if objective == "latency"
                         else f"{chosen.objective / uniform.objective:.2f}×")
            lat_txt = " / ".join(f"{k} {v:.3f}" for k, v in lat.items() if k != "noisy") or "—"
            lat_txt += " (noisy machine)" if lat.get("noisy") else ""
            rows.append([res.step_title, objective, fig(chosen), fig(uniform), ratio, lat_txt,
                         "yes" if res.reachable else "unreachable"])
    print_table(f"budgeted search vs the best uniform preset within the same budget (top-1 drop ≤ {BUDGET * 100:.0f} "
                f"point on {data.eval.name}, n={len(data.eval)}; latency p50 ms batch 1, {THREADS} thread(s), "
                "interleaved)", ["step", "objective", "search (chosen)", "best uniform", "chosen / uniform",
                                 "p50 ms", "budget"], rows)
    print(f"results: {save_results('bench_search', {'threads': THREADS, 'budget': BUDGET, 'steps': results})}")


if __name__ == "__main__":
    main()
