"""Pruning and low-rank on the bundled digits CNN (and a Linear-heavy MLP trained here).

What it shows (all through the real plugins; accuracy is top-1 on digits_eval.npz,
n=449, never trained on; latency = eager torch on CPU, p50 after warm-up, fixed
threads stated in the titles):
1. structured 50% channels: params/size ratio (target ≤0.3×) and latency at batch 1
   and 64 vs the original (target ≤0.6×), accuracy before any fine-tuning, for
   magnitude / Taylor / random importance;
2. magnitude 50% / 80%: the file is not smaller, the zip is; dense latency unchanged;
3. low-rank with no training at all: accuracy vs kept energy (where plain SVD breaks
   down), plain vs data-aware SVD (per-feature RMS and full whitening) at equal parameter
   budget, and −30% params with a
   short distillation recovery (when the distill plugin is installed).

Run: ``python -m benchmarks.bench_prune_lowrank [--threads N] [--quick]``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_SIZE = 0.3
TARGET_LATENCY = 0.6
EPOCHS_RECOVER = 2


def _run(plugin: Any, handle: Any, params: dict[str, Any], work: Path, data: Any = None,
         source: Any = None) -> Any:
    from slimline.core.plugin import StepContext

    work.mkdir(parents=True, exist_ok=True)
    ctx = StepContext(work_dir=Path(tempfile.mkdtemp(dir=work)), data=data, source_model=source)
    return plugin().run(handle, plugin.Params(**params), ctx)


def _acc(handle: Any, ds: Any, threads: int) -> float:
    from slimline.core.metrics import accuracy

    return accuracy(handle, ds, threads=threads).top1


def _latencies(handles: dict[str, Any], batch: int, threads: int, ds: Any, runs: int,
               rounds: int) -> dict[str, float]:
    """p50 ms per model, measured in interleaved rounds (A B C, A B C, …), median over rounds.

    Interleaving keeps a burst of load from other processes from landing on one model only.
    """
    import statistics

    from slimline.core.metrics import measure_latency
    from slimline.core.runtime import open_session

    sessions = {k: open_session(h, threads=threads) for k, h in handles.items()}
    p50s: dict[str, list[float]] = {k: [] for k in handles}
    for _ in range(rounds):
        for k, sess in sessions.items():
            p50s[k].append(measure_latency(sess, batch=batch, runs=runs, warmup=max(3, runs // 5),
                                           dataset=ds).p50_ms)
    return {k: statistics.median(v) for k, v in p50s.items()}


def _train_mlp(train: Any, eval_ds: Any, work: Path, seed: int = 0, epochs: int = 25) -> Any:
    """A Linear-heavy MLP (1024→512→256→10, ~0.66M params) trained on the digits train split."""
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from slimline.core.handle import TensorSpec
    from slimline.core.torchmodel import save_torch_module

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                        nn.Linear(256, 10))
    x = torch.from_numpy(train.inputs["input"])
    y = torch.from_numpy(train.labels.astype(np.int64))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return save_torch_module(net.eval(), work / "digits_mlp.safetensors",
                             inputs=[TensorSpec(name="input", shape=["batch", 1, 32, 32])],
                             outputs=[TensorSpec(name="logits", shape=["batch", 10])])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="bench_prune_lowrank")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for latency and accuracy (default 1)")
    ap.add_argument("--quick", action="store_true", help="fewer timed runs and curve points")
    args = ap.parse_args(argv if argv is not None else [])

    import torch

    from benchmarks.common import print_table, save_results
    from slimline.core.data import DataBundle, load_dataset
    from slimline.core.demo import demo_paths
    from slimline.core.metrics import measure_size
    from slimline.core.torchmodel import handle_for_archive
    from slimline.plugins.lowrank import LowRankFactorize
    from slimline.plugins.prune import MagnitudePrune, StructuredPrune

    torch.manual_seed(0)
    th = args.threads
    runs1, runs64, rounds = (30, 4, 2) if args.quick else (50, 6, 3)
    paths = demo_paths()
    orig = handle_for_archive(paths["torch"])
    ev = load_dataset(paths["eval"], orig)
    tr = load_dataset(paths["train"], orig)
    bundle = DataBundle(eval=ev, train=tr, calibration=tr.take(256))
    work = Path(tempfile.mkdtemp(prefix="bench_prune_"))
    results: dict[str, Any] = {"threads": th, "eval": {"dataset": ev.name, "n": len(ev)}}
    t_start = time.perf_counter()

    size0 = measure_size(orig)
    base = {"params": orig.param_count, "bytes": size0.bytes_on_disk, "zip": size0.zip_bytes,
            "acc": _acc(orig, ev, 0)}
    results["original"] = base

    # 1+2. run the pruning variants, then time them together ---------------------------------------
    structured: dict[str, Any] = {}
    for imp in ("magnitude", "taylor", "random"):
        out = _run(StructuredPrune, orig, {"pruning_ratio": 0.5, "importance": imp, "taylor_batches": 8},
                   work / "structured", data=bundle)
        h = out.model
        structured[imp] = {"handle": h, "params": h.param_count, "param_ratio": h.param_count / base["params"],
                           "size_ratio": measure_size(h, compressed=False).bytes_on_disk / base["bytes"],
                           "mac_ratio": out.metrics["mac_ratio"], "acc": _acc(h, ev, 0)}
    magnitude: dict[str, Any] = {}
    for label, params in (("50% l1", {"sparsity": 0.5}), ("80% l1", {"sparsity": 0.8}),
                          ("80% l1 global", {"sparsity": 0.8, "scope": "global"}),
                          ("80% random", {"sparsity": 0.8, "criterion": "random"}),
                          ("2:4 l1", {"pattern": "n:m"})):
        out = _run(MagnitudePrune, orig, params, work / "magnitude")
        magnitude[label] = {"handle": out.model, "bytes": out.metrics["bytes"], "zip": out.metrics["zip_bytes"],
                            "zip_ratio": out.metrics["zip_ratio"], "sparsity": out.metrics["sparsity"],
                            "acc": _acc(out.model, ev, 0)}
    timed = {"original": orig, "structured": structured["magnitude"]["handle"],
             "magnitude 50%": magnitude["50% l1"]["handle"], "magnitude 80%": magnitude["80% l1"]["handle"]}
    lat = {b: _latencies(timed, b, th, ev, runs, rounds) for b, runs in ((1, runs1), (64, runs64))}
    base["b1"], base["b64"] = lat[1]["original"], lat[64]["original"]
    s = structured["magnitude"]
    s["b1"], s["b64"] = lat[1]["structured"], lat[64]["structured"]
    magnitude["50% l1"]["b1"], magnitude["50% l1"]["b64"] = lat[1]["magnitude 50%"], lat[64]["magnitude 50%"]
    magnitude["80% l1"]["b1"], magnitude["80% l1"]["b64"] = lat[1]["magnitude 80%"], lat[64]["magnitude 80%"]
    for d in (*structured.values(), *magnitude.values()):
        d.pop("handle")
    results["structured"], results["magnitude"] = structured, magnitude

    rows = [["original", f"{base['params']:,}", "1.00", "1.00", f"{base['b1']:.2f}", "1.00",
             f"{base['b64']:.1f}", "1.00", f"{base['acc']:.4f}"]]
    for imp, r in structured.items():
        rows.append([f"structured 50% ({imp})", f"{r['params']:,}", f"{r['param_ratio']:.2f}",
                     f"{r['size_ratio']:.2f}", f"{r['b1']:.2f}" if "b1" in r else "same widths",
                     f"{r['b1'] / base['b1']:.2f}" if "b1" in r else "",
                     f"{r['b64']:.1f}" if "b64" in r else "", f"{r['b64'] / base['b64']:.2f}" if "b64" in r else "",
                     f"{r['acc']:.4f}"])
    ok_size = s["size_ratio"] <= TARGET_SIZE
    ok_lat = s["b1"] / base["b1"] <= TARGET_LATENCY and s["b64"] / base["b64"] <= TARGET_LATENCY
    lat_note = (f"eager torch CPU, threads {th}, p50 ms, median of {rounds} interleaved rounds of "
                f"{runs1} (batch 1) / {runs64} (batch 64) runs after warm-up")
    print_table(f"Structured pruning 50%, demo CNN ({lat_note}; top-1 on {ev.name} n={len(ev)}, "
                "before fine-tuning)",
                ["variant", "params", "param×", "size×", "b1 ms", "b1×", "b64 ms", "b64×", "top-1"], rows)
    print(f"targets: size ≤{TARGET_SIZE}× {'MET' if ok_size else 'MISSED'}; latency ≤{TARGET_LATENCY}× at "
          f"batch 1 and 64 {'MET' if ok_lat else 'MISSED'}. Accuracy is recovered by the Distill step "
          "(see bench_demo / bench_distill).")

    rows = [["original", f"{base['bytes']:,}", f"{base['zip']:,}", f"{base['zip'] / base['bytes']:.2f}",
             f"{base['b1']:.2f}", f"{base['b64']:.1f}", f"{base['acc']:.4f}"]]
    for label, r in magnitude.items():
        rows.append([label, f"{int(r['bytes']):,}", f"{int(r['zip']):,}", f"{r['zip_ratio']:.2f}",
                     f"{r['b1']:.2f}" if "b1" in r else "", f"{r['b64']:.1f}" if "b64" in r else "",
                     f"{r['acc']:.4f}"])
    print_table(f"Magnitude pruning, demo CNN (zip = zlib level 6 of the file; {lat_note}; "
                f"top-1 on {ev.name} n={len(ev)}, no fine-tuning)",
                ["variant", "file bytes", "zip bytes", "zip/file", "b1 ms", "b64 ms", "top-1"], rows)
    print("The file keeps its size and dense latency does not drop (zeros are multiplied too); "
          "only the compressed size shrinks.")

    # 3. low-rank: energy curve without training -----------------------------------------------
    mlp = _train_mlp(tr, ev, work)
    mlp_acc = _acc(mlp, ev, 0)
    energies = [0.2, 0.5, 0.8, 0.99] if args.quick else [0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.99]
    models = [("demo CNN, Linear only", orig, {}, base["acc"]),
              ("demo CNN, Linear+Conv", orig, {"include_conv": True}, base["acc"]),
              ("digits MLP (trained here)", mlp, {}, mlp_acc)]
    results["lowrank_curve"] = []
    rows = []
    for label, h0, extra, acc0 in models:
        rows.append([label, "original", f"{h0.param_count:,}", "1.00", "", f"{acc0:.4f}"])
        for e in energies:
            out = _run(LowRankFactorize, h0, {"energy": e, **extra}, work / "lowrank")
            fact = int(out.metrics["layers_factorized"])
            acc = _acc(out.model, ev, 0) if fact else acc0  # nothing factorized: the same model
            results["lowrank_curve"].append({"model": label, "energy": e, "param_ratio": out.metrics["param_ratio"],
                                             "acc": acc, "layers_factorized": fact})
            rows.append(["", f"{e:.2f}", f"{int(out.metrics['params_after']):,}", f"{out.metrics['param_ratio']:.2f}",
                         str(fact), f"{acc:.4f}"])
    print_table(f"Low-rank SVD, no training: top-1 vs kept energy ({ev.name} n={len(ev)})",
                ["model", "energy", "params", "param×", "layers", "top-1"], rows)
    print("Layers whose rank would reach break-even m·n/(m+n) are skipped, so high energies stop saving "
          "parameters; low energies save parameters but break the trained model.")

    # 3b. plain vs data-aware at equal parameter budget ------------------------------------------
    rows = []
    results["lowrank_data_aware"] = []
    # ranks where each model starts to break (found with the energy curve above)
    cases = [("digits MLP", mlp, {}, [0.01, 0.02, 0.05]),
             ("demo CNN, Linear only", orig, {}, [0.008, 0.016, 0.03]),
             ("demo CNN, Linear+Conv", orig, {"include_conv": True}, [0.3, 0.45, 0.6])]
    for label, h0, extra, ratios in cases:
        for q in (ratios[1:2] if args.quick else ratios):
            accs, prm = {}, {}
            for method in ("plain", "diag", "whiten"):
                aware = {} if method == "plain" else {"data_aware": True, "data_aware_method": method}
                out = _run(LowRankFactorize, h0, {"rank_mode": "ratio", "ratio": q, "calibration_batches": 8,
                                                  **aware, **extra}, work / "aware", data=bundle)
                accs[method], prm[method] = _acc(out.model, ev, 0), out.metrics["param_ratio"]
            assert len(set(prm.values())) == 1, prm   # same ranks → same parameter budget
            results["lowrank_data_aware"].append({"model": label, "ratio": q, "param_ratio": prm["plain"], **accs})
            rows.append([label, f"{q:g}", f"{prm['plain']:.2f}", f"{accs['plain']:.4f}", f"{accs['diag']:.4f}",
                         f"{accs['whiten']:.4f}", f"{(accs['whiten'] - accs['plain']) * 100:+.1f}"])
    print_table(f"Plain vs data-aware SVD at the same ranks (calibration: 256 train rows; top-1 on {ev.name} "
                f"n={len(ev)}, no training)",
                ["model", "rank×", "param×", "plain", "diag (RMS)", "whiten", "Δ whiten"], rows)

    # 3c. −30% params with a short distillation recovery ------------------------------------------
    try:
        from slimline.plugins.distill import Distill
    except Exception as exc:  # the distill plugin ships separately in some builds
        print(f"\n(distillation recovery skipped: {exc})")
        Distill = None
    if Distill is not None:
        out = _run(LowRankFactorize, orig, {"rank_mode": "ratio", "ratio": 0.45}, work / "recover")
        lr_acc = _acc(out.model, ev, 0)
        t0 = time.perf_counter()
        dout = _run(Distill, out.model, {"epochs": EPOCHS_RECOVER, "seed": 0}, work / "recover",
                    data=DataBundle(train=tr), source=orig)
        secs = time.perf_counter() - t0
        rec_acc = _acc(dout.model, ev, 0)
        r = {"param_ratio": dout.model.param_count / orig.param_count, "acc_lowrank": lr_acc,
             "acc_recovered": rec_acc, "distill_s": secs}
        results["lowrank_recovery"] = r
        print_table(f"Low-rank (hidden Linear at 0.45× full rank) + {EPOCHS_RECOVER} epochs distillation "
                    f"from the original (top-1 on {ev.name} n={len(ev)})",
                    ["model", "params", "param×", "top-1", "Δ points vs original"],
                    [["original", f"{orig.param_count:,}", "1.00", f"{base['acc']:.4f}", ""],
                     ["low-rank, no training", f"{out.model.param_count:,}", f"{r['param_ratio']:.2f}",
                      f"{lr_acc:.4f}", f"{(lr_acc - base['acc']) * 100:+.1f}"],
                     [f"+ distill {EPOCHS_RECOVER} epochs ({secs:.0f} s)", f"{dout.model.param_count:,}",
                      f"{r['param_ratio']:.2f}", f"{rec_acc:.4f}", f"{(rec_acc - base['acc']) * 100:+.1f}"]])
        ok = r["param_ratio"] <= 0.7 and rec_acc >= base["acc"] - 0.01
        print(f"target −30% params and within 1 point: {'MET' if ok else 'MISSED'}")
    results["seconds"] = time.perf_counter() - t_start
    path = save_results("bench_prune_lowrank", results)
    print(f"\n{results['seconds']:.0f} s; results in {path}")
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
