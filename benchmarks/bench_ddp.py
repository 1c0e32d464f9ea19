"""The demo's distillation in one process and data-parallel with torchrun (1 and 2 processes, gloo on CPU).

The demo pipeline's first two steps (structured prune 50 %, then distillation from the original:
12 epochs, batch 64, lr 0.002, early stopping on a 10 % validation split), run one after the
other (never side by side) with the job's thread budget = all cores (one process uses them all,
torchrun's 2 processes get half each), and in one process with 1 thread. Reported: top-1 of the
distilled model on digits_eval.npz (n=449, never trained on), time per epoch (mean over the
epochs run), epochs run, wall time.
Target: 2 processes within 0.5 point of 1 process. On a small, shared machine two threads in one
process can be much slower than one (each op waits for both threads), hence the 1-thread row.

Run: ``python -m benchmarks.bench_ddp``.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import print_table, save_results

# (name, distill params, the job's thread budget: 0 = all cores, shared by torchrun's processes)
CONFIGS = [("1 process, all cores (in the job)", {}, 0),
           ("1 process, 1 thread (in the job)", {}, 1),
           ("torchrun, 1 process, all cores", {"engine": "torchrun", "nproc": 1}, 0),
           ("torchrun, 2 processes × 1 thread", {"engine": "torchrun", "nproc": 2}, 0)]


def run(ws: Path, params: dict[str, Any], threads: int) -> tuple[Any, float]:
    from slimline.core.demo import demo_paths
    from slimline.core.engines.spec import apply_settings
    from slimline.core.history import load_run, run_dir
    from slimline.core.jobs import start_pipeline_job
    from slimline.core.pipeline import load_pipeline

    paths = demo_paths()
    pipe = load_pipeline(paths["pipeline"])
    pipe = apply_settings(pipe.model_copy(update={"steps": pipe.steps[:2]}), {f"s2.{k}": v for k, v in params.items()})
    pipe.evaluation.latency.batch_sizes = [1]
    t0 = time.perf_counter()
    job = start_pipeline_job(pipe, paths["torch"], workspace=ws, threads=threads)
    events = job.wait()
    wall = time.perf_counter() - t0
    if events[-1].type != "done":
        raise RuntimeError(f"distillation failed: {events[-1]}")
    return load_run(run_dir(ws, job.run_id)), wall


def main() -> None:
    load0 = os.getloadavg()
    rows, out = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, params, threads) in enumerate(CONFIGS):
            # a workspace per row: every row trains (with --no-cache the step cache would still hand back an
            # existing entry for the same key, and the thread count is not part of the key)
            record, wall = run(Path(tmp) / f"ws{k}", params, threads)
            s2 = record.step("s2")
            assert s2 is not None and s2.accuracy is not None
            m = s2.metrics
            out[name] = {"top1": s2.accuracy.top1, "n": s2.accuracy.n, "seconds_per_epoch": m["seconds_per_epoch"],
                         "epochs_run": m["epochs_run"], "best_epoch": m["best_epoch"], "wall_s": wall,
                         "processes": m["processes"]}
            rows.append([name, f"{s2.accuracy.top1:.4f}", f"{m['seconds_per_epoch']:.2f}",
                         f"{int(m['epochs_run'])} (best {int(m['best_epoch'])})", f"{wall:.0f}"])
    base = out[CONFIGS[0][0]]["top1"]
    two = out[CONFIGS[-1][0]]["top1"]
    print_table(f"demo distillation (prune 50% → distill; top-1 on digits_eval n=449; {os.cpu_count()} cores; "
                f"load average {load0[0]:.1f} → {os.getloadavg()[0]:.1f})",
                ["training", "top-1", "s / epoch", "epochs run", "job wall s"], rows)
    drop = abs(two - base) * 100
    print(f"2 processes vs 1: {drop:.2f} points apart (target ≤ 0.5): {'met' if drop <= 0.5 else 'NOT met'}")
    save_results("ddp", {"configs": out, "points_apart": drop})


if __name__ == "__main__":
    main()
