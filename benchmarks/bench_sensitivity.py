"""Does the sensitivity ranking mean something? Excluding its top-k layers vs other orders, on real data.

1. The demo CNN (resources/demo, held-out digits n=449; ranking on the first 256 rows) under magnitude
   pruning at 70 % zeros: top-1 with every layer pruned except the first k of each order.
2. all-MiniLM-L6-v2 (the real-model corpus's HF folder, converted to ONNX by the convert step) under dynamic
   INT8 (defaults) on the first 64 pydoc sentences at 64 tokens: pooled cosine vs the original, every layer
   quantized except the first k of each order. Skipped (said so) when `make realmodels` has not run.
Orders: the ranking, its reverse, and three seeded random orders. Also: the analysis time, and how often the
cheap score (error at the layer's output) agreed with the end metric (Spearman, measured layers only).
Run: ``python -m benchmarks.bench_sensitivity`` (≈ 10 min on 2 busy cores).
"""
from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import print_table, save_results

THREADS = int(os.environ.get("SLIMLINE_BENCH_THREADS", "1"))
REPO = Path(__file__).resolve().parents[1]


def _curves(model: Any, data: Any, step: str, level: str, modes: list[str], top_k: int, ks: list[int],
            tmp: Path, max_rows: int = 256) -> dict[str, Any]:
    from slimline.core.sensitivity.analyze import analyze
    from slimline.core.sensitivity.models import SensitivitySettings
    from slimline.core.sensitivity.prepare import prepare
    from slimline.core.sensitivity.recovery import area, exclusion_curve

    t0 = time.perf_counter()
    res = analyze(model, data, SensitivitySettings(step=step, levels=[level], modes=modes, top_k=top_k,
                                                   max_rows=max_rows, threads=THREADS), workspace=tmp)
    seconds = time.perf_counter() - t0
    order = res.ranked_layers()
    orders = {"ranking": order, "reversed": order[::-1]}
    rng = random.Random(0)
    for i in range(3):
        o = order[:]
        rng.shuffle(o)
        orders[f"random #{i + 1}"] = o
    prep = prepare(model, data, step, {}, workspace=tmp, max_rows=max_rows, threads=THREADS)
    lw = prep.layerwise()
    try:
        curves = {name: exclusion_curve(prep, lw, o, level, ks) for name, o in orders.items()}
    finally:
        lw.close()
        prep.close()
    rows = [[name, *[f"{m.value:.4f}" for m in c], f"{area(c):.4f}"] for name, c in curves.items()]
    print(f"\n{res.step_title} on {Path(res.model).name}: {res.metric}; original {res.baseline:.4f}, every layer at "
          f"{level}: {res.uniform.value if res.uniform else float('nan'):.4f}; analysis {seconds:.0f} s "
          f"({len(res.rows)} layers, {sum(r.source == 'end_metric' for r in res.rows)} measured end to end); "
          f"cheap vs end metric Spearman {res.cheap_vs_end if res.cheap_vs_end is not None else float('nan'):+.2f}")
    print("ranking: " + ", ".join(f"{r.rank}. {r.layer} ({r.score:.4g}, {r.source})" for r in res.rows[:8]))
    print_table(f"{res.metric.split(' (n=')[0]} with every layer at {level} except the first k of each order "
                "(area = summed loss, smaller = recovers sooner)", ["order", *[f"k={k}" for k in ks], "area"], rows)
    return {"metric": res.metric, "seconds": seconds, "ranking": [r.model_dump(mode="json") for r in res.rows],
            "curves": {k: [m.model_dump(mode="json") for m in c] for k, c in curves.items()},
            "cheap_vs_end": res.cheap_vs_end}


def main() -> None:
    from slimline.core.data import DataBundle
    from slimline.core.demo import demo_paths
    from slimline.core.models import open_model

    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    out: dict[str, Any] = {"threads": THREADS}
    with tempfile.TemporaryDirectory(prefix="bench_sensitivity_") as d:
        tmp = Path(d)
        p = demo_paths()
        demo = open_model(p["torch"])
        out["demo_prune"] = _curves(demo, DataBundle.from_paths(eval=p["eval"], train=p["train"], model=demo),
                                    "prune", "0.7", ["all_but"], -1, [0, 1, 2, 3], tmp / "demo")
        sys.path.insert(0, str(REPO))
        from benchmarks.bench_real_embedding import corpus

        paths = corpus("minilm-l6-v2", "pydoc-sentences")
        if paths is not None:
            lines = paths["pydoc-sentences"].read_text(encoding="utf-8").splitlines()[:64]
            (tmp / "sentences.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
            minilm = open_model(paths["minilm-l6-v2"]).with_dims(sequence=64)
            data = DataBundle.from_paths(eval=tmp / "sentences.txt", model=minilm, max_length=64)
            out["minilm_dynamic_int8"] = _curves(minilm, data, "quantize_dynamic", "int8", ["all_but"], 8,
                                                 [0, 1, 2, 4, 8], tmp / "minilm")
    print(f"results: {save_results('bench_sensitivity', out)}")


if __name__ == "__main__":
    main()
