"""Quantization figures: a transformer (dynamic INT8) and the demo CNN (static QDQ vs dynamic vs FP16).

Run: python -m benchmarks.bench_quantize   (≈2–3 min on 2 cores)

(a) BERT-style encoder built from transformers.BertConfig, random init (no download):
    fidelity is measured on fixed-seed random token ids — say so, it is not accuracy.
(b) The bundled digits CNN exported to ONNX (opset 17, dynamic batch): accuracy on the
    held-out digits split (n=449), calibration on the first 128 training rows.
Latency: batch 1, fixed threads (stated), 10 warm-up + 50 runs, models interleaved.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

THREADS = int(os.environ.get("SLIMLINE_BENCH_THREADS", "1"))
RUNS = 50


def _handle(path: Path) -> Any:
    from slimline.core.handle import ModelHandle

    try:
        from slimline.core.models import open_model

        return open_model(path)
    except Exception:  # noqa: BLE001
        return ModelHandle(path=str(path), format="onnx", family="onnx", files=[str(path)],
                           bytes_on_disk=path.stat().st_size)


def _export_bert(path: Path) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=8000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=1024, max_position_embeddings=128, num_labels=4,
                     attn_implementation="eager")
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 64))
    torch.onnx.export(model, (ids, torch.ones_like(ids)), str(path), dynamo=False, opset_version=17,
                      input_names=["input_ids", "attention_mask"], output_names=["logits"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                    "logits": {0: "batch"}})


def _export_cnn(path: Path) -> None:
    import torch

    from slimline.core.demo import demo_paths
    from slimline.core.torchmodel import load_torch_module

    net = load_torch_module(demo_paths()["torch"]).eval()
    torch.onnx.export(net, (torch.zeros(2, 1, 32, 32),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def _run_step(plugin: Any, handle: Any, params: Any, data: Any, work: Path) -> tuple[Any, float, str]:
    from slimline.core.errors import StepFailed
    from slimline.core.plugin import StepContext

    ctx = StepContext(work_dir=work, data=data, threads=THREADS, seed=0)
    t0 = time.perf_counter()
    try:
        out = plugin.run(handle, params, ctx)
        return out, time.perf_counter() - t0, ""
    except StepFailed as exc:
        return None, time.perf_counter() - t0, str(exc)


def _latency(base: Path, other: Path, feeds: dict[str, np.ndarray]) -> tuple[Any, Any]:
    from slimline.plugins.quantize.evaluate import compare_latency

    return compare_latency(base, other, feeds, threads=THREADS, warmup=10, runs=RUNS)


def _row(name: str, base: Path, out: Any, dt: float, feeds: dict[str, np.ndarray], acc: bool,
         err: str = "") -> tuple[list[Any], dict[str, Any]]:
    if out is None:
        return [name, "—", "—", "—", "—", "—", "—", f"FAILED: {err.splitlines()[0][:60]}"], {"name": name, "error": err}
    path = Path(out.model.path)
    t_base, t_q = _latency(base, path, feeds)
    m = out.metrics
    flags = [w.split(":")[0] for w in out.warnings if w.startswith(("SLOWER", "BIGGER"))]
    accuracy = f"{m['top1_before']:.4f}→{m['top1_after']:.4f}" if acc and "top1_after" in m else "n/a (random ids)"
    row = [name, f"{path.stat().st_size / 1e6:.2f} ({m['size_ratio']:.3f}×)",
           f"{t_base.p50_ms:.2f}/{t_base.p90_ms:.2f}", f"{t_q.p50_ms:.2f}/{t_q.p90_ms:.2f}",
           f"{t_q.p50_ms / t_base.p50_ms:.2f}×", f"{m['mean_cosine']:.5f}", accuracy,
           f"{int(m['attempts'])} att., {dt:.0f}s " + (",".join(flags) or "ok")]
    rec = {"name": name, "bytes": path.stat().st_size, "size_ratio": m["size_ratio"],
           "fp32_p50_ms": t_base.p50_ms, "fp32_p90_ms": t_base.p90_ms, "p50_ms": t_q.p50_ms, "p90_ms": t_q.p90_ms,
           "latency_ratio": t_q.p50_ms / t_base.p50_ms, "metrics": m, "warnings": out.warnings}
    return row, rec


HEADERS = ["variant", "size MB (ratio)", "fp32 p50/p90 ms", "p50/p90 ms", "latency", "mean cos", "top-1", "notes"]


def bench_transformer(tmp: Path) -> tuple[list[list[Any]], list[dict[str, Any]], list[str]]:
    from slimline.core.data import DataBundle, Dataset
    from slimline.plugins.quantize import QuantizeDynamic

    path = tmp / "bert.onnx"
    _export_bert(path)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 8000, size=(64, 64)).astype(np.int64)
    data = DataBundle(eval=Dataset("random token ids (seed 0, 64×64)", "bench",
                                   {"input_ids": ids, "attention_mask": np.ones_like(ids)}))
    handle = _handle(path)
    out, dt, err = _run_step(QuantizeDynamic(), handle, QuantizeDynamic.Params(), data, tmp / "bert_dyn")
    feeds = {"input_ids": ids[:1], "attention_mask": np.ones_like(ids[:1])}
    row, rec = _row("dynamic INT8 per-channel", path, out, dt, feeds, acc=False, err=err)
    rec["fp32_bytes"] = path.stat().st_size
    notes = (out.notes + out.warnings) if out is not None else [err]
    return [row], [rec], notes


def bench_cnn(tmp: Path) -> tuple[list[list[Any]], list[dict[str, Any]], dict[str, list[str]]]:
    from slimline.core.data import DataBundle, Dataset
    from slimline.core.demo import demo_paths
    from slimline.plugins.quantize import ConvertFp16, QuantizeDynamic, QuantizeStatic

    path = tmp / "digits_cnn.onnx"
    _export_cnn(path)
    ev = np.load(demo_paths()["eval"])
    tr = np.load(demo_paths()["train"])
    data = DataBundle(eval=Dataset("digits eval (held-out)", "digits_eval.npz", {"input": ev["input"]}, ev["labels"]),
                      calibration=Dataset("digits train[:128]", "digits_train.npz", {"input": tr["input"][:128]}))
    handle = _handle(path)
    feeds = {"input": ev["input"][:1]}
    variants = [
        ("static INT8 QDQ (S8S8, per-channel, MinMax)", QuantizeStatic(), QuantizeStatic.Params()),
        ("dynamic INT8 incl. Conv (ConvInteger)", QuantizeDynamic(),
         QuantizeDynamic.Params(op_types=("Conv", "MatMul", "Gemm"))),
        ("FP16 (keep fp32 I/O)", ConvertFp16(), ConvertFp16.Params()),
    ]
    rows: list[list[Any]] = []
    recs: list[dict[str, Any]] = []
    notes: dict[str, list[str]] = {}
    for i, (name, plugin, params) in enumerate(variants):
        out, dt, err = _run_step(plugin, handle, params, data, tmp / f"cnn_{i}")
        row, rec = _row(name, path, out, dt, feeds, acc=True, err=err)
        rows.append(row)
        recs.append(rec)
        notes[name] = (out.notes + out.warnings) if out is not None else [err]
    return rows, recs, notes


def main() -> None:
    from benchmarks.common import print_table, save_results
    from slimline.plugins.quantize.evaluate import cpu_int8_flags

    flags = cpu_int8_flags()
    print(f"threads={THREADS} (set SLIMLINE_BENCH_THREADS), batch 1, 10 warm-up + {RUNS} runs, interleaved with fp32; "
          f"CPU int8 flags: {', '.join(k for k, v in flags.items() if v) or 'none'}")
    with tempfile.TemporaryDirectory(prefix="bench_quantize_") as d:
        tmp = Path(d)
        t_rows, t_recs, t_notes = bench_transformer(tmp)
        print_table("(a) BERT-style encoder (4 layers, hidden 256, vocab 8000, 5.3M params, random init), "
                    "batch 1 × seq 64; fidelity on fixed-seed random token ids (n=64), not accuracy",
                    HEADERS, t_rows)
        print(f"  fp32 file: {t_recs[0].get('fp32_bytes', 0) / 1e6:.2f} MB")
        for line in t_notes:
            if line.startswith(("attempt", "size", "latency", "pre-processing", "SLOWER", "BIGGER", "word_emb")) \
                    or "symmetric" in line[:120]:
                print("  ·", line[:220])
        c_rows, c_recs, c_notes = bench_cnn(tmp)
        print_table("(b) demo digits CNN (768k params) → ONNX opset 17; accuracy on digits eval split (n=449), "
                    "calibration on digits train[:128]", HEADERS, c_rows)
        for name, lines in c_notes.items():
            for line in lines:
                if line.startswith(("SLOWER", "BIGGER", "attempt", "calibrated")):
                    print(f"  · [{name.split(' (')[0]}] {line[:400]}")
    t = t_recs[0]
    s, dyn = c_recs[0], c_recs[1]
    checks = {
        "transformer dynamic INT8 size ≤ 0.26×": t.get("size_ratio", 9) <= 0.26,
        "transformer dynamic INT8 faster than fp32": t.get("latency_ratio", 9) < 1.0,
        "transformer dynamic INT8 cosine ≥ 0.99": t.get("metrics", {}).get("mean_cosine", 0) >= 0.99,
        "CNN static QDQ not slower than fp32": s.get("latency_ratio", 9) <= 1.0,
        "CNN dynamic-with-Conv slower and flagged": dyn.get("latency_ratio", 0) > 1.0
        and any(w.startswith("SLOWER") and "ConvInteger" in w for w in dyn.get("warnings", [])),
    }
    print("\nchecks:")
    for k, v in checks.items():
        print(f"  [{'x' if v else ' '}] {k}")
    path = save_results("bench_quantize", {"threads": THREADS, "runs": RUNS, "cpu_int8_flags": flags,
                                           "transformer": t_recs, "cnn": c_recs, "checks": checks})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
