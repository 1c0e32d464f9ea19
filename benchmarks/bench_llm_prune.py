"""LLM pruning on real LMs with real text: Wanda / SparseGPT vs magnitude, blocks + distillation.

Models (``--model``):
  * smollm2 (default) — SmolLM2-135M-Instruct from the real-model cache (a Q4_1 GGUF, dequantized here through
    transformers to a float32 HF folder, cached beside it); Llama family, 30 decoder blocks, vocabulary 49152.
  * gemma3 — Gemma 3 270M (``gemma3-270m-q4_k_m``, llama.cpp's Q4_K_M mix), opened by Slimline (its dequantized
    float32 folder in the workspace's GGUF cache, as in bench_llm_weight_only); 18 decoder blocks, tied
    262144 × 640 embedding. The vocabulary makes logits 5× SmolLM's per token, so distillation uses batches of 4.
Text: pydoc-sentences (English sentences of
the Python reference docs, one per line, in topic order); the last 20 % of the lines are the evaluation
text, never seen by any step; calibration and distillation windows come from the first 80 %.
Perplexity: 24 windows × 128 tokens of the evaluation text (``--eval-windows``; a BOS only where the
tokenizer adds one: SmolLM's does not, Gemma's does),
exp(mean NLL) with a 95 % bootstrap interval over windows (slimline.core.lm.score).

What it shows (all through the real plugins, torch on the CPU, fixed threads):
1. 50 % unstructured and 2:4 with magnitude (the baseline), Wanda and SparseGPT: perplexity, compressed
   size (the file itself does not shrink: zeros are stored densely, and dense kernels do not speed up);
2. 25 % of the decoder blocks, rounded down (7 of 30; Gemma: 4 of 18), removed by block influence, then
   distillation from the original (token-level KL, a few minutes on 2 cores): perplexity before / after
   recovery, size, and greedy `generate` tokens/s against the original on the same threads.

Run: ``python -m benchmarks.bench_llm_prune [--model smollm2|gemma3] [--threads 2] [--distill-steps 16] [--quick]
[--eval-windows 24] [--only unstructured|blocks]``.
Skips with a message when the model or the text is not in the real-model cache (`make realmodels`).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REAL = Path.home() / ".cache" / "slimline" / "realmodels"
GGUF_DIR = REAL / "smollm2-135m-q4_1"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CORPUS = REAL / "pydoc-sentences" / "sentences.txt"
FLOAT_DIR = Path.home() / ".cache" / "slimline" / "bench" / "smollm2-135m-f32"
EVAL_WINDOWS, WINDOW = 24, 128
PROMPT = "The import statement combines two operations; it searches for the named module, then"


@dataclass(frozen=True)
class LM:
    """What differs between the benchmarked models: where they come from and how big a distillation batch fits."""

    key: str
    label: str            # table titles
    description: str      # results["model"]
    gguf: Path
    blocks: int
    folder: Callable[[], Path]
    distill_batch: int
    distill_windows: int


def gemma_folder() -> Path:
    """Gemma 3's dequantized float32 folder: Slimline's own GGUF open (cached in the workspace after the first)."""
    from slimline.core.models import open_model

    return Path(open_model(MODELS["gemma3"].gguf).path)


def float_folder() -> Path:
    """The GGUF dequantized to a float32 HF folder (rebuilt from config + state_dict: the GGUF-loaded
    model carries a quantization config and will not save_pretrained as it is)."""
    if (FLOAT_DIR / "config.json").is_file():
        return FLOAT_DIR
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(str(GGUF_DIR), gguf_file=GGUF, dtype=torch.float32)
    cfg_dict = loaded.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg = AutoConfig.for_model(**cfg_dict)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    tok = AutoTokenizer.from_pretrained(str(GGUF_DIR), gguf_file=GGUF)
    tmp = FLOAT_DIR.with_name(FLOAT_DIR.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.eval().save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    tmp.rename(FLOAT_DIR)
    return FLOAT_DIR


MODELS = {
    "smollm2": LM("smollm2", "SmolLM2-135M", "SmolLM2-135M-Instruct (Q4_1 GGUF → float32)", GGUF_DIR / GGUF, 30,
                  float_folder, 8, 120),
    "gemma3": LM("gemma3", "Gemma-3-270M", "Gemma 3 270M (Q4_K_M GGUF → float32)",
                 REAL / "gemma3-270m-q4_k_m" / "gemma-3-270m-q4_k_m.gguf", 18, gemma_folder, 4, 60),
}


def split_text(work: Path) -> tuple[Path, Path]:
    """First 80 % of the lines → training/calibration text, last 20 % → evaluation text."""
    lines = [ln for ln in CORPUS.read_text(encoding="utf-8").splitlines() if ln.strip()]
    cut = int(len(lines) * 0.8)
    train, ev = work / "train.txt", work / "eval.txt"
    train.write_text("\n".join(lines[:cut]) + "\n", encoding="utf-8")
    ev.write_text("\n".join(lines[cut:]) + "\n", encoding="utf-8")
    return train, ev


def perplexity(handle: Any, windows: Any) -> Any:
    """Perplexity (with its bootstrap interval) of a model handle on the evaluation windows."""
    import torch

    from slimline.core.lm.score import perplexity as ppl
    from slimline.core.lm.score import summarize_window
    from slimline.plugins._shared.lm import load_lm

    model = load_lm(handle)
    sums = []
    with torch.no_grad():
        for i in range(0, windows.count, 4):
            ids = torch.from_numpy(windows.ids[i:i + 4])
            logits = model(input_ids=ids, use_cache=False).logits.float().numpy()
            sums += [summarize_window(lg, windows.ids[i + j], windows.scored[i + j]) for j, lg in enumerate(logits)]
    del model
    return ppl(sums)


def generate_speed(handles: dict[str, Any], tokenizer: Any, new_tokens: int = 32, rounds: int = 3) -> dict[str, float]:
    """Greedy `generate` tokens/s (prompt of ~20 tokens, exactly ``new_tokens`` new ones), median over
    interleaved rounds (A B, A B, …) so a burst of load from other processes hits both models alike."""
    import torch

    from slimline.plugins._shared.lm import load_lm

    models = {k: load_lm(h) for k, h in handles.items()}
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    speeds: dict[str, list[float]] = {k: [] for k in models}
    with torch.no_grad():
        for m in models.values():  # warm-up
            m.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        for _ in range(rounds):
            for k, m in models.items():
                t0 = time.perf_counter()
                m.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
                speeds[k].append(new_tokens / (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in speeds.items()}


def _data(train: Path, ev: Path) -> Any:
    import numpy as np

    from slimline.core.data import DataBundle, Dataset

    def ds(p: Path) -> Dataset:  # the LM steps read the text file behind the dataset
        return Dataset(name=p.name, source=str(p), inputs={"input_ids": np.zeros((1, 1), np.int64)})

    return DataBundle(eval=ds(ev), train=ds(train), calibration=ds(train))


def run_step(plugin: Any, handle: Any, params: dict[str, Any], work: Path, data: Any, source: Any,
             threads: int, events: list | None = None) -> Any:
    from slimline.core.plugin import StepContext

    work.mkdir(parents=True, exist_ok=True)
    cb = (lambda k, p: events.append((k, p))) if events is not None else None
    ctx = StepContext(work_dir=Path(tempfile.mkdtemp(dir=work)), data=data, source_model=source, threads=threads,
                      event_cb=cb)
    return plugin().run(handle, plugin.Params(**params), ctx)


def _fmt_ppl(p: Any) -> str:
    return f"{p.value:.2f} [{p.low:.2f}, {p.high:.2f}]"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--distill-steps", type=int, default=16, help="optimizer steps of 8 windows × 128 tokens")
    ap.add_argument("--quick", action="store_true", help="unstructured: Wanda vs magnitude only")
    ap.add_argument("--only", choices=["unstructured", "blocks"], default=None)
    ap.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    ap.add_argument("--eval-windows", type=int, default=EVAL_WINDOWS, help="held-out windows × 128 tokens scored")
    args = ap.parse_args(argv or [])
    lm = args.lm = MODELS[args.model]
    if not lm.gguf.is_file() or not CORPUS.is_file():
        print(f"skipped: needs {lm.gguf} and {CORPUS} (fetch the real-model corpus: make realmodels)")
        return
    import torch

    torch.set_num_threads(args.threads)
    from benchmarks.common import print_table, save_results
    from slimline.core.lm.text import load_tokenizer, text_windows
    from slimline.core.models.hf import open_hf
    from slimline.plugins.distill import Distill
    from slimline.plugins.prune import LLMPrune

    t_all = time.perf_counter()
    folder = lm.folder()
    original = open_hf(folder)
    tok = load_tokenizer(folder)
    work = Path(tempfile.mkdtemp(prefix="bench_llm_prune-"))
    results: dict[str, Any] = {"threads": args.threads, "model": lm.description}
    try:
        train, ev = split_text(work)
        windows = text_windows(ev, tok, length=WINDOW, count=args.eval_windows)
        data = _data(train, ev)
        base = perplexity(original, windows)
        print(f"evaluation: {windows.describe()}; original perplexity {_fmt_ppl(base)}; {args.threads} threads; "
              f"calibration 32 windows × 128 tokens of {train.name} ({train.stat().st_size:,} bytes); "
              f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        results["eval"] = windows.describe()
        results["original_perplexity"] = base.model_dump()
        if args.only in (None, "unstructured"):
            results["unstructured"] = _unstructured(original, data, windows, base, work, args, LLMPrune,
                                                    print_table)
        if args.only in (None, "blocks"):
            results["blocks"] = _blocks(original, data, windows, base, work, args, LLMPrune, Distill, tok,
                                        print_table)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = time.perf_counter() - t_all
    results["load_average_end"] = os.getloadavg()[0]
    path = save_results("bench_llm_prune" + ("" if lm.key == "smollm2" else f"_{lm.key}"), results)
    print(f"\n{results['seconds']:.0f} s in all (load average at the end {results['load_average_end']:.1f} on "
          f"{os.cpu_count()} cores: other processes share these cores, so times and tokens/s are slower and "
          f"noisier than on an idle machine; the ratios come from interleaved rounds); results in {path}")


def _unstructured(original: Any, data: Any, windows: Any, base: Any, work: Path, args: Any, plugin: Any,
                  print_table: Any) -> list[dict[str, Any]]:
    methods = ["magnitude", "wanda"] + ([] if args.quick else ["sparsegpt"])
    rows, out = [], []
    for pattern, label in (("unstructured", "50 % unstructured"), ("n:m", "2:4")):
        for method in methods:
            t0 = time.perf_counter()
            step = run_step(plugin, original, {"method": method, "sparsity": 0.5, "pattern": pattern},
                            work / f"{method}-{pattern.replace(':', '')}", data, original, args.threads)
            seconds = time.perf_counter() - t0
            p = perplexity(step.model, windows)
            m = step.metrics
            rec = {"pattern": label, "method": method, "perplexity": p.model_dump(), "seconds": seconds,
                   "sparsity": m["sparsity"], "model_sparsity": m["model_sparsity"], "bytes": m["bytes"],
                   "bytes_before": m["bytes_before"], "zip_bytes": m["zip_bytes"],
                   "zip_bytes_before": m["zip_bytes_before"]}
            out.append(rec)
            rows.append([label, method, _fmt_ppl(p), f"{p.value / base.value - 1:+.0%}",
                         f"{m['sparsity']:.1%} ({m['model_sparsity']:.1%})", f"{m['bytes'] / m['bytes_before']:.2f}×",
                         f"{m['zip_bytes'] / m['zip_bytes_before']:.2f}×", f"{seconds:.0f} s"])
            shutil.rmtree(step.model.path, ignore_errors=True)
            print(f"  {label} {method}: perplexity {_fmt_ppl(p)} ({seconds:.0f} s)", flush=True)
    print_table(f"{args.lm.label}, 50 % of every decoder Linear zeroed ({args.threads} threads, calibration 32×128 "
                f"tokens; perplexity on {windows.count}×{windows.length} held-out tokens; original "
                f"{_fmt_ppl(base)})",
                ["pattern", "method", "perplexity [95 %]", "vs original", "sparsity (of all params)",
                 "file size", "zip size", "time"], rows)
    print("File sizes do not change and dense kernels do not speed up: the zeros are stored and multiplied. "
          "2:4 pays only on sparse tensor-core kernels (not used here).")
    return out


def _blocks(original: Any, data: Any, windows: Any, base: Any, work: Path, args: Any, prune: Any, distill: Any,
            tok: Any, print_table: Any) -> dict[str, Any]:
    from slimline.plugins._shared.common import files_bytes
    from slimline.plugins.prune.llm import _weight_files

    lm = args.lm
    t0 = time.perf_counter()
    cut = run_step(prune, original, {"method": "blocks", "block_ratio": 0.25}, work / "blocks", data, original,
                   args.threads)
    t_prune = time.perf_counter() - t0
    p_cut = perplexity(cut.model, windows)
    removed = [r["block"] for r in cut.tables["blocks"] if r["status"] == "removed"]
    print(f"  removed blocks {removed} in {t_prune:.0f} s: perplexity {_fmt_ppl(p_cut)}", flush=True)
    events: list[tuple[str, dict]] = []
    t0 = time.perf_counter()
    rec = run_step(distill, cut.model, {
        "epochs": 1, "batch_size": lm.distill_batch, "max_batches_per_epoch": args.distill_steps,
        "learning_rate": 1e-4, "optimizer": "adamw", "temperature": 1.0, "alpha": 0.0, "lm_window_length": WINDOW,
        "lm_windows": lm.distill_windows,
        "validation_fraction": 0.1, "lm_eval_every": max(1, args.distill_steps // 4), "patience": 100},
        work / "distill", data, original, args.threads, events)
    t_distill = time.perf_counter() - t0
    p_rec = perplexity(rec.model, windows)
    print(f"  distilled {int(rec.metrics['steps'])} steps in {t_distill:.0f} s: perplexity {_fmt_ppl(p_rec)}",
          flush=True)
    speeds = generate_speed({"original": original, "blocks": cut.model, "distilled": rec.model}, tok)
    size = {k: files_bytes(_weight_files(h)) for k, h in
            (("original", original), ("blocks", cut.model), ("distilled", rec.model))}
    params = {"original": cut.metrics["params_before"], "blocks": cut.metrics["params_after"],
              "distilled": cut.metrics["params_after"]}
    ppls = {"original": base, "blocks": p_cut, "distilled": p_rec}
    names = {"original": f"original ({lm.blocks} blocks)",
             "blocks": f"{len(removed)} blocks removed ({lm.blocks - len(removed)} left)",
             "distilled": f"  + distilled {int(rec.metrics['steps'])} steps"}
    rows = [[names[k], _fmt_ppl(ppls[k]), f"{ppls[k].value / base.value - 1:+.0%}", f"{params[k] / 1e6:.1f} M",
             f"{size[k] / 1e6:.0f} MB ({size[k] / size['original']:.2f}×)",
             f"{speeds[k]:.1f} ({speeds[k] / speeds['original']:.2f}×)"] for k in names]
    print_table(f"{lm.label}, 25 % of the decoder blocks removed by block influence, then distilled from the "
                f"original ({args.threads} threads; perplexity on {windows.count}×{windows.length} held-out tokens)",
                ["model", "perplexity [95 %]", "vs original", "params", "weights", "generate tok/s"], rows)
    curve = [(p["step"], round(p["value"], 2)) for k, p in events if k == "perplexity"]
    print(f"distillation: {rec.metrics['tokens_trained']:,.0f} training tokens ({int(rec.metrics['steps'])} steps × "
          f"{lm.distill_batch} windows × {WINDOW}), {rec.metrics['seconds_per_step']:.1f} s/step, lr 1e-4 AdamW, "
          f"T = 1, pure KL; "
          f"validation perplexity by step (held-out training windows): {curve}; {t_distill:.0f} s in all")
    print("generate: greedy, 32 new tokens after a 20-token prompt, median of 3 interleaved rounds, torch eager "
          "fp32 with the KV cache")
    return {"removed": removed, "prune_seconds": t_prune, "distill_seconds": t_distill,
            "distill_metrics": rec.metrics, "validation_curve": curve,
            "models": {k: {"perplexity": ppls[k].model_dump(), "params": params[k], "weight_bytes": size[k],
                           "generate_tokens_per_s": speeds[k]} for k in names}}


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
