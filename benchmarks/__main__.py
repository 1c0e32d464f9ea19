"""`make bench`: run every benchmark module in turn; each prints its own tables.

Benchmarks are never part of `make test`. Results are also written as JSON to
benchmarks/results/ by the modules that produce figures worth keeping.
Run one with `python -m benchmarks.<name>`; choose some with `python -m benchmarks open cache`.
"""
from __future__ import annotations

import importlib
import sys
import time
import traceback

ORDER = ["bench_open", "bench_latency", "bench_quantize", "bench_prune_lowrank",
         "bench_distill", "bench_demo", "bench_sweep", "bench_ddp", "bench_export", "bench_peers",
         "bench_tool_speed", "bench_ui_stall",
         "bench_real_embedding",
         "bench_real_dense", "bench_llm_weight_only", "bench_llm_decode", "bench_llm_prune", "bench_sensitivity",
         "bench_search", "bench_search_llm"]


def main(argv: list[str]) -> int:
    wanted = [f"bench_{a.removeprefix('bench_')}" for a in argv] or ORDER
    failed = []
    for name in wanted:
        try:
            mod = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"benchmarks.{name}":
                continue
            raise
        print(f"\n=== {name} " + "=" * (70 - len(name)), flush=True)
        t0 = time.perf_counter()
        try:
            mod.main()
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"--- {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
