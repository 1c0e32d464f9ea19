"""Is measure_latency repeatable? The demo CNN on onnxruntime and torch, batch 1 and 64.

For each (runtime, batch, threads) the same measurement is repeated in
interleaved blocks (every config once per block, so a noisy neighbour hits all
configs alike rather than one). Prints p50/p90 of the pooled runs, each block's
p50 and the largest deviation of a block's p50 from their median; the target
is ≤ 5 %. Inputs are the first rows of the held-out digits split (real data).

Wall time needs an idle machine. The table also shows process CPU time per run
(p50) and its deviation: with threads=1 it equals wall time when the machine is
idle, and stays repeatable when other processes compete for the cores, so a
wall/CPU ratio well above 1 and a high load average say "busy machine", not
"unstable measurement".

    python -m benchmarks.bench_latency [--repeats 5] [--threads 1 2] [--batches 1 64]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import print_table, save_results

TARGET_PCT = 5.0


def export_demo_onnx(out_dir: Path) -> Path:
    """Demo CNN → ONNX with the legacy exporter (fast), opset 17, dynamic batch axis."""
    import warnings

    import torch

    from slimline.core.demo import demo_paths
    from slimline.core.torchmodel import load_torch_module

    module = load_torch_module(demo_paths()["torch"])
    path = out_dir / "digits_cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (torch.zeros(2, 1, 32, 32),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


def runs_for(batch: int) -> tuple[int, int]:
    """(runs, warmup): enough samples for a stable median without minutes per config."""
    return (200, 20) if batch <= 4 else (40, 5)


def block_p50s(blocks: list[np.ndarray]) -> tuple[list[float], float]:
    """Each block's p50 in ms and the largest deviation from their median, in %."""
    p50s = [float(np.percentile(x * 1e3, 50)) for x in blocks]
    med = float(np.median(p50s))
    return p50s, (max(abs(p - med) for p in p50s) / med * 100 if med > 0 else 0.0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_latency", description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--runtimes", nargs="+", default=["onnxruntime", "torch"], choices=["onnxruntime", "torch"])
    args = ap.parse_args(argv if argv is not None else [])

    from slimline.core.data import load_dataset
    from slimline.core.demo import demo_paths
    from slimline.core.handle import ModelHandle, TensorSpec
    from slimline.core.metrics import (
        CpuWatch,
        environment,
        latency_feeds,
        latency_report,
        load_average,
        time_session,
        usable_cores,
    )
    from slimline.core.runtime import open_session
    from slimline.core.torchmodel import handle_for_archive

    env = environment()
    print(f"CPU: {env['cpu']} ({env['cores_usable']} usable cores), python {env['python']}, "
          f"onnxruntime {env['versions'].get('onnxruntime')}, torch {env['versions'].get('torch')}")
    with tempfile.TemporaryDirectory() as tmp:
        torch_h = handle_for_archive(demo_paths()["torch"])
        onnx_path = export_demo_onnx(Path(tmp))
        onnx_h = ModelHandle(path=str(onnx_path), format="onnx", family="onnx", files=[str(onnx_path)],
                             inputs=[TensorSpec(name="input", dtype="float32", shape=["batch", 1, 32, 32])],
                             outputs=torch_h.outputs, dim_defaults={"batch": 1}, opset=17)
        data = load_dataset(demo_paths()["eval"], torch_h)
        handles = {"onnxruntime": onnx_h, "torch": torch_h}
        configs = [(rt, b, t) for rt in args.runtimes for t in args.threads for b in args.batches]
        sessions = {(rt, t): open_session(handles[rt], threads=t) for rt in args.runtimes for t in args.threads}
        feeds = {b: latency_feeds(torch_h, b, data) for b in args.batches}
        samples: dict[tuple, list[np.ndarray]] = {c: [] for c in configs}
        cpu_samples: dict[tuple, list[np.ndarray]] = {c: [] for c in configs}
        loads: list[float] = []
        with CpuWatch() as watch:  # others' CPU use over all blocks: a busy machine is named, not averaged in
            for rep in range(args.repeats):  # interleaved blocks
                for rt, b, t in configs:
                    runs, warmup = runs_for(b)
                    loads.append(load_average() or float("nan"))
                    wall, cpu = time_session(sessions[(rt, t)], feeds[b][0], runs=runs, warmup=warmup)
                    samples[(rt, b, t)].append(wall)
                    cpu_samples[(rt, b, t)].append(cpu)
                print(f"  block {rep + 1}/{args.repeats} done (load {loads[-1]:.1f})", flush=True)
        rows, results = [], []
        for rt, b, t in configs:
            runs, warmup = runs_for(b)
            blocks = samples[(rt, b, t)]
            pooled = latency_report(np.concatenate(blocks), session=sessions[(rt, t)], feeds=feeds[b][0],
                                    batch=b, warmup=warmup, input_kind=feeds[b][1], dataset=feeds[b][2],
                                    cpu_s=np.concatenate(cpu_samples[(rt, b, t)]), load_avg=max(loads),
                                    blocks=blocks, conditions=watch.cond)
            p50s, dev = block_p50s(blocks)
            cpu_p50s, cpu_dev = block_p50s(cpu_samples[(rt, b, t)])
            ok = dev <= TARGET_PCT and not pooled.noisy
            rows.append([onnx_path.name if rt == "onnxruntime" else Path(torch_h.path).name, pooled.provider, b,
                         pooled.threads, f"{pooled.p50_ms:.3f}", f"{pooled.p90_ms:.3f}",
                         " ".join(f"{p:.3f}" for p in p50s), f"{dev:.1f}", "ok" if ok else "NOISY",
                         f"{pooled.cpu_p50_ms:.3f}", f"{cpu_dev:.1f}"])
            results.append({"runtime": rt, "batch": b, "threads": t, "runs_per_block": runs, "warmup": warmup,
                            "block_p50_ms": p50s, "max_dev_pct": dev, "within_target": ok,
                            "block_cpu_p50_ms": cpu_p50s, "cpu_max_dev_pct": cpu_dev,
                            "noisy": pooled.noisy, "noise_reasons": pooled.noise_reasons,
                            "report": pooled.model_dump()})
    print_table(f"Latency repeatability ({args.repeats} interleaved blocks; inputs: {feeds[args.batches[0]][2]}; "
                f"target ≤ {TARGET_PCT:.0f} % deviation of block p50s from their median)",
                ["model", "runtime", "batch", "threads", "p50 ms", "p90 ms", "block p50s (ms)", "max dev %", "",
                 "CPU p50 ms", "CPU dev %"], rows)
    finite = [x for x in loads if x == x]
    if finite:
        print(f"1-minute load average during the blocks: {min(finite):.1f}–{max(finite):.1f} "
              f"on {usable_cores()} usable cores" + ("  (BUSY: wall times are not trustworthy)"
                                                     if max(finite) > usable_cores() else ""))
    if watch.cond.others_busy_cores is not None:
        print(f"other processes kept {watch.cond.others_busy_cores:.1f} cores busy during the blocks")
    for r in results:
        if r["noisy"]:
            print(f"NOISY {r['runtime']} b{r['batch']} t{r['threads']}: {'; '.join(r['noise_reasons'])}")
    path = save_results("bench_latency", {"target_pct": TARGET_PCT, "load_avg": loads, "results": results,
                                          "others_busy_cores": watch.cond.others_busy_cores})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
