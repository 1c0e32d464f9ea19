"""Slimline against the tools a user would otherwise call by hand, same run, same models, same inputs.

Quantization peers (ratios vs each model's fp32 ONNX file):
  * ORT default  — ``onnxruntime.quantization.quantize_dynamic(in, out)`` with its defaults
                   (what a user types by hand: per-tensor, QInt8, every supported op incl. Conv);
  * ORT per-ch.  — the same with ``per_channel=True``;
  * Slimline     — its INT8 preset for the model kind, run through the Plugin API with a StepContext:
                   ``builtin.quantize_static`` (QDQ, calibrated) for conv nets, ``builtin.quantize_dynamic``
                   (defaults: per-channel, Gemm→MatMul, Conv left in float) for MatMul nets.
Pruning peer: Torch-Pruning's MetaPruner called directly vs ``builtin.prune_structured`` with the
same ratio (50%) and importance (L2 magnitude), output layer kept: params, accuracy and outputs must match.

Models (built here): the demo digits CNN (→ ONNX opset 17, legacy exporter), the same CNN exported
with opset 11, a Linear-heavy MLP trained here on the digits train split, and a BERT-style encoder
from ``BertConfig`` (random init; fidelity on fixed-seed random token ids, NOT accuracy).
Accuracy: top-1 on digits_eval.npz (n=449). Fidelity: cosine / top-1 agreement vs fp32 outputs.
Latency: onnxruntime CPU, batch 1, intra-op threads fixed (THREADS, stated), sequential execution,
10 warm-up + at least 50 timed runs (and ≥0.4 s) per variant, variants interleaved, two rounds; p50/p90 of the first
round are reported, the second round checks repeatability (p50 within 5%).

Run: ``python -m benchmarks.bench_peers`` (≈3–5 min on 2 cores).
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

THREADS = int(os.environ.get("SLIMLINE_BENCH_THREADS", "1"))
WARMUP, RUNS, ROUNDS = 10, 50, 2
MIN_ROUND_S = 0.4  # each variant is timed for at least this long per round (≥ RUNS runs)
REPEAT_TOL = 0.05


# ----------------------------------------------------------------------------- models


def _demo_data() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    from slimline.core.demo import demo_paths

    ev, tr = np.load(demo_paths()["eval"]), np.load(demo_paths()["train"])
    return {"input": ev["input"]}, ev["labels"], tr["input"]


def _export(module: Any, example: tuple, path: Path, opset: int, names: list[str], dyn: dict) -> Path:
    import torch

    torch.onnx.export(module.eval(), example, str(path), dynamo=False, opset_version=opset, input_names=names,
                      output_names=["logits"], dynamic_axes=dyn)
    return path


def build_cnn(tmp: Path, opset: int) -> Path:
    import torch

    from slimline.core.demo import demo_paths
    from slimline.core.torchmodel import load_torch_module

    net = load_torch_module(demo_paths()["torch"])
    return _export(net, (torch.zeros(2, 1, 32, 32),), tmp / f"cnn_opset{opset}.onnx", opset, ["input"],
                   {"input": {0: "batch"}, "logits": {0: "batch"}})


def train_mlp(tmp: Path) -> tuple[Path, Path]:
    """1024→512→256→10 MLP (0.66M params), 15 epochs on the digits train split. Returns (archive, onnx)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from slimline.core.demo import demo_paths
    from slimline.core.handle import TensorSpec
    from slimline.core.torchmodel import save_torch_module

    tr = np.load(demo_paths()["train"])
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                        nn.Linear(256, 10))
    x, y = torch.from_numpy(tr["input"]), torch.from_numpy(tr["labels"].astype(np.int64))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    for _ in range(15):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    net.eval()
    arch = tmp / "mlp.safetensors"
    save_torch_module(net, arch, inputs=[TensorSpec(name="input", shape=["batch", 1, 32, 32])],
                      outputs=[TensorSpec(name="logits", shape=["batch", 10])])
    onnx_path = _export(net, (torch.zeros(2, 1, 32, 32),), tmp / "mlp.onnx", 17, ["input"],
                        {"input": {0: "batch"}, "logits": {0: "batch"}})
    return arch, onnx_path


def build_bert(tmp: Path) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=8000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=1024, max_position_embeddings=128, num_labels=4, attn_implementation="eager")
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 32))
    return _export(model, (ids, torch.ones_like(ids)), tmp / "bert.onnx", 17, ["input_ids", "attention_mask"],
                   {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                    "logits": {0: "batch"}})


# ----------------------------------------------------------------------------- measuring


def _session(path: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _outputs(path: Path, feeds: dict[str, np.ndarray], batch: int = 64) -> np.ndarray:
    sess = _session(path)
    n = len(next(iter(feeds.values())))
    return np.concatenate([sess.run(None, {k: v[i:i + batch] for k, v in feeds.items()})[0]
                           for i in range(0, n, batch)])


def _fidelity(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    a, b = ref.reshape(len(ref), -1).astype(np.float64), out.reshape(len(out), -1).astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean())}


def _latency(paths: dict[str, Path], feeds1: dict[str, np.ndarray]) -> dict[str, list[dict[str, float]]]:
    """Interleaved rounds: every variant warms up and is timed once per round."""
    sessions = {k: _session(p) for k, p in paths.items()}
    rounds: dict[str, list[dict[str, float]]] = {k: [] for k in paths}
    for _ in range(ROUNDS):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            for _ in range(WARMUP):
                s.run(None, feeds1)
            per = (time.perf_counter() - t0) / WARMUP
            ts = []
            for _ in range(max(RUNS, int(MIN_ROUND_S / max(per, 1e-6)))):
                t0 = time.perf_counter()
                s.run(None, feeds1)
                ts.append((time.perf_counter() - t0) * 1e3)
            q = statistics.quantiles(ts, n=10)
            rounds[k].append({"p50": statistics.median(ts), "p90": q[8], "min": min(ts), "max": max(ts),
                              "runs": len(ts)})
    return rounds


def _run_plugin(plugin_cls: Any, path: Path, params: Any, data: Any, work: Path) -> tuple[Path | None, str, Any]:
    from slimline.core.errors import StepFailed
    from slimline.core.models import open_model
    from slimline.core.plugin import StepContext

    work.mkdir(parents=True, exist_ok=True)
    ctx = StepContext(work_dir=work, data=data, threads=THREADS, seed=0)
    try:
        out = plugin_cls().run(open_model(path), params, ctx)
    except StepFailed as exc:
        return None, str(exc).splitlines()[0][:120], None
    return Path(out.model.path), "", out


def bench_quantize(name: str, fp32: Path, feeds: dict[str, np.ndarray], labels: np.ndarray | None,
                   preset: str, calib: dict[str, np.ndarray], tmp: Path) -> dict[str, Any]:
    from onnxruntime.quantization import quantize_dynamic

    from slimline.core.data import DataBundle, Dataset
    from slimline.plugins.quantize import QuantizeDynamic, QuantizeStatic

    variants: dict[str, Path] = {"fp32": fp32}
    errors: dict[str, str] = {}
    t0 = time.perf_counter()
    p = tmp / f"{name}_ort_default.onnx"
    quantize_dynamic(str(fp32), str(p))
    variants["ORT dynamic (defaults)"] = p
    p = tmp / f"{name}_ort_perch.onnx"
    quantize_dynamic(str(fp32), str(p), per_channel=True)
    variants["ORT dynamic per-channel"] = p
    t_peer = time.perf_counter() - t0
    bundle = DataBundle(eval=Dataset(f"{name} eval", "bench", dict(feeds), labels),
                        calibration=Dataset(f"{name} calibration", "bench", dict(calib)))
    plugin = QuantizeStatic if preset == "static" else QuantizeDynamic
    t0 = time.perf_counter()
    out, err, step = _run_plugin(plugin, fp32, plugin.Params(), bundle, tmp / f"{name}_slim")
    t_slim = time.perf_counter() - t0
    slim_key = f"Slimline {preset} INT8 preset"
    if out is not None:
        variants[slim_key] = out
    else:
        errors[slim_key] = err
    ref = _outputs(fp32, feeds)
    first = {k: v[:1] for k, v in feeds.items()}
    lat = _latency(variants, first)
    rows = {}
    for k, path in variants.items():
        outs = ref if k == "fp32" else _outputs(path, feeds)
        rec: dict[str, Any] = {"bytes": path.stat().st_size, "size_ratio": path.stat().st_size / fp32.stat().st_size,
                               **_fidelity(ref, outs), "p50_ms": lat[k][0]["p50"], "p90_ms": lat[k][0]["p90"],
                               "p50_ms_repeat": lat[k][1]["p50"], "runs": lat[k][0]["runs"],
                               "p50_ratio": lat[k][0]["p50"] / lat["fp32"][0]["p50"],
                               "p90_ratio": lat[k][0]["p90"] / lat["fp32"][0]["p90"],
                               "repeat_spread": abs(lat[k][1]["p50"] - lat[k][0]["p50"]) / lat[k][0]["p50"]}
        if labels is not None:
            rec["top1"] = float((outs.argmax(1) == labels).mean())
        rows[k] = rec
    return {"variants": rows, "errors": errors, "peer_seconds": t_peer, "slimline_seconds": t_slim,
            "slimline_attempts": (step.metrics.get("attempts") if step is not None else None),
            "n": len(next(iter(feeds.values()))), "slim_key": slim_key}


def bench_prune(name: str, archive: Path, feeds: dict[str, np.ndarray], labels: np.ndarray, tmp: Path
                ) -> dict[str, Any]:
    """Torch-Pruning directly vs builtin.prune_structured: same ratio, same importance."""
    import torch
    import torch_pruning as tp

    from slimline.core.models import open_model
    from slimline.core.torchmodel import load_torch_module
    from slimline.plugins._shared import common
    from slimline.plugins.prune import StructuredPrune

    x = torch.from_numpy(feeds["input"])
    open_model(archive)  # validates the archive up front: a bad file fails here, not mid-benchmark

    def acc(m: Any) -> tuple[float, torch.Tensor]:
        with torch.no_grad():
            out = torch.cat([m(x[i:i + 128]) for i in range(0, len(x), 128)])
        return float((out.argmax(1).numpy() == labels).mean()), out

    base = load_torch_module(archive).eval()
    params0 = sum(p.numel() for p in base.parameters())
    acc0, _ = acc(base)
    # --- by hand, the way the Torch-Pruning README shows it
    t0 = time.perf_counter()
    direct = load_torch_module(archive).eval()
    example = torch.zeros(1, *feeds["input"].shape[1:])
    out_layer = common.output_layer_name(direct, example)
    pruner = tp.pruner.MetaPruner(direct, example, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=0.5, ignored_layers=[direct.get_submodule(out_layer)])
    pruner.step()
    t_direct = time.perf_counter() - t0
    acc_d, out_d = acc(direct.eval())
    params_d = sum(p.numel() for p in direct.parameters())
    # --- through Slimline's step
    t0 = time.perf_counter()
    out_path, err, step = _run_plugin(StructuredPrune, archive,
                                      StructuredPrune.Params(pruning_ratio=0.5, importance="magnitude"), None,
                                      tmp / f"{name}_prune")
    t_slim = time.perf_counter() - t0
    if out_path is None:
        return {"error": err}
    slim = load_torch_module(out_path).eval()
    acc_s, out_s = acc(slim)
    params_s = sum(p.numel() for p in slim.parameters())
    return {"params_before": params0, "top1_before": acc0, "direct": {"params": params_d, "top1": acc_d,
                                                                     "seconds": t_direct},
            "slimline": {"params": params_s, "top1": acc_s, "seconds": t_slim},
            "max_abs_output_diff": float((out_d - out_s).abs().max()), "n": len(labels)}


# ----------------------------------------------------------------------------- report


def _fmt_q(name: str, res: dict[str, Any], has_acc: bool) -> list[list[Any]]:
    rows = []
    for k, r in res["variants"].items():
        rows.append([k, f"{r['bytes'] / 1e6:.2f}", f"{r['size_ratio']:.3f}×", f"{r['p50_ms']:.3f}/{r['p90_ms']:.3f}",
                     f"{r['p50_ratio']:.2f}×/{r['p90_ratio']:.2f}×", f"{r['repeat_spread'] * 100:.1f}%",
                     f"{1 - r['mean_cosine']:.1e}/{1 - r['min_cosine']:.1e}", f"{r['top1_agreement']:.4f}",
                     f"{r['top1']:.4f}" if has_acc else "n/a (random ids)"])
    for k, e in res["errors"].items():
        rows.append([k, "—", "—", "—", "—", "—", "—", "—", f"FAILED: {e}"])
    return rows


def _checks(name: str, res: dict[str, Any]) -> dict[str, bool]:
    v = res["variants"]
    slim, peer = v.get(res["slim_key"]), v["ORT dynamic (defaults)"]
    if slim is None:
        return {f"{name}: Slimline preset produced a model": False}
    out = {
        f"{name}: Slimline beats ORT defaults on fidelity (1−mean cosine {1 - slim['mean_cosine']:.2e} vs "
        f"{1 - peer['mean_cosine']:.2e})": slim["mean_cosine"] > peer["mean_cosine"],
        f"{name}: ... at equal or smaller size ({slim['bytes'] / 1e6:.2f} vs {peer['bytes'] / 1e6:.2f} MB, "
        "≤ +2% allowed for QDQ scale/zero-point tensors)": slim["bytes"] <= peer["bytes"] * 1.02,
    }
    if peer["p50_ratio"] <= 1.0:
        out[f"{name}: not slower than fp32 where the peer is not (p50 {slim['p50_ratio']:.2f}×, peer "
            f"{peer['p50_ratio']:.2f}×, 5% noise allowed)"] = slim["p50_ratio"] <= 1.05
    else:
        out[f"{name}: peer is slower than fp32 ({peer['p50_ratio']:.2f}×); Slimline p50 {slim['p50_ratio']:.2f}× "
            "(no target)"] = True
    out[f"{name}: repeat rounds agree within 5% at p50 (worst "
        f"{max(r['repeat_spread'] for r in v.values()) * 100:.1f}%)"] = all(
        r["repeat_spread"] <= REPEAT_TOL for r in v.values())
    return out


def main() -> None:
    from benchmarks.common import print_table, save_results
    from slimline.plugins.quantize.evaluate import cpu_int8_flags

    flags = cpu_int8_flags()
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # ORT's "consider pre-processing" advice, once per call
    print(f"onnxruntime CPU, batch 1, intra-op threads={THREADS} (SLIMLINE_BENCH_THREADS), sequential, "
          f"{WARMUP} warm-up + max({RUNS} runs, {MIN_ROUND_S} s) per variant and round, variants interleaved, "
          f"{ROUNDS} rounds (p50/p90 from round 1, 'repeat Δp50' = |round 2 − round 1| / round 1); "
          f"CPU int8 flags: {', '.join(k for k, f in flags.items() if f) or 'none'}")
    feeds, labels, train = _demo_data()
    calib = {"input": train[:128]}
    results: dict[str, Any] = {"threads": THREADS, "warmup": WARMUP, "runs": RUNS, "rounds": ROUNDS,
                               "cpu_int8_flags": flags, "quantize": {}, "prune": {}}
    checks: dict[str, bool] = {}
    headers = ["variant", "MB", "size", "p50/p90 ms", "p50/p90 vs fp32", "repeat Δp50", "1−cos mean/worst",
               "top-1 agree", "top-1 acc"]
    with tempfile.TemporaryDirectory(prefix="bench_peers_") as d:
        tmp = Path(d)
        mlp_arch, mlp_onnx = train_mlp(tmp)
        models = [
            ("digits CNN opset 17", build_cnn(tmp, 17), feeds, labels, "static", calib,
             "demo digits CNN (0.77M params) → ONNX opset 17; accuracy on digits eval (n=449)"),
            ("digits CNN opset 11", build_cnn(tmp, 11), feeds, labels, "static", calib,
             "the same CNN exported with an old opset (11); accuracy on digits eval (n=449)"),
            ("digits MLP", mlp_onnx, feeds, labels, "dynamic", calib,
             "Linear-heavy MLP 1024→512→256→10 (0.66M params) trained here; accuracy on digits eval (n=449)"),
        ]
        try:
            bert = build_bert(tmp)
            rng = np.random.default_rng(0)
            ids = rng.integers(0, 8000, size=(128, 32)).astype(np.int64)
            bfeeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            models.append(("BERT encoder", bert, bfeeds, None, "dynamic", {k: v[:64] for k, v in bfeeds.items()},
                           "BERT-style encoder from BertConfig (4 layers, hidden 256, vocab 8000, ~5.3M params, "
                           "random init), seq 32; fidelity on fixed-seed random token ids (n=128), NOT accuracy"))
        except ImportError as exc:
            print(f"(transformers missing: no BERT model: {exc})")
        for name, path, f, lab, preset, cal, title in models:
            res = bench_quantize(name.replace(" ", "_"), path, f, lab, preset, cal, tmp)
            results["quantize"][name] = res
            print_table(f"{name}: {title}", headers, _fmt_q(name, res, lab is not None))
            print(f"  wall time: ORT peers {res['peer_seconds']:.1f} s (both), Slimline step "
                  f"{res['slimline_seconds']:.1f} s incl. verification/retries ({res['slimline_attempts']} attempt(s))")
            checks.update(_checks(name, res))
        prune_rows = []
        cnn_arch = __import__("slimline.core.demo", fromlist=["demo_paths"]).demo_paths()["torch"]
        for name, arch in [("digits CNN", cnn_arch), ("digits MLP", mlp_arch)]:
            r = bench_prune(name.replace(" ", "_"), Path(arch), feeds, labels, tmp)
            results["prune"][name] = r
            if "error" in r:
                prune_rows.append([name, "FAILED", r["error"], "", "", ""])
                checks[f"{name}: structured prune ran"] = False
                continue
            prune_rows.append([name, f"{r['params_before']:,} ({r['top1_before']:.4f})",
                               f"{r['direct']['params']:,} ({r['direct']['top1']:.4f})",
                               f"{r['slimline']['params']:,} ({r['slimline']['top1']:.4f})",
                               f"{r['max_abs_output_diff']:.2e}",
                               f"{r['direct']['seconds']:.1f} / {r['slimline']['seconds']:.1f}"])
            checks[f"{name}: Slimline prune = Torch-Pruning by hand (params {r['slimline']['params']:,} vs "
                   f"{r['direct']['params']:,}, top-1 {r['slimline']['top1']:.4f} vs {r['direct']['top1']:.4f})"] = (
                r["slimline"]["params"] == r["direct"]["params"] and r["slimline"]["top1"] == r["direct"]["top1"]
                and r["max_abs_output_diff"] < 1e-4)
        print_table("Structured pruning 50% channels, L2 magnitude, output layer kept, no fine-tuning "
                    "(top-1 on digits eval, n=449)",
                    ["model", "original params (top-1)", "Torch-Pruning by hand", "Slimline step",
                     "max |Δ output|", "seconds by hand / step (step includes reload check)"], prune_rows)
    print("\nchecks:")
    for k, v in checks.items():
        print(f"  [{'PASS' if v else 'FAIL'}] {k}")
    results["checks"] = checks
    print(f"results: {save_results('bench_peers', results)}")


if __name__ == "__main__":
    main()
