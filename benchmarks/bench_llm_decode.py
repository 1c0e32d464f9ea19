"""Decode speed of a real LM, torch fp32 ``generate`` vs the ONNX variants, interleaved so load hits all alike.

Why a separate benchmark: on a shared machine a torch figure taken minutes after the ONNX figures is not
comparable with them (the load moves). Here every round runs each engine once, in a shuffled order, in one
process with the same thread count (torch ``set_num_threads`` and onnxruntime-genai ``intra_op_num_threads``),
and the speed-up is taken per round (paired), so its median and range say how stable the ratio is.

Model: SmolLM2-135M-Instruct from the real-model corpus (``smollm2-135m-q4_1``), as the float32 HF folder and
the ONNX folders that ``benchmarks.bench_llm_weight_only`` builds (it is run first when they are missing).
Workload: greedy generation of NEW_TOKENS tokens after a PROMPT-token prompt cut from the corpus' real
English (``pydoc-sentences``); decode tokens/s excludes the prefill (timed separately).
Each timed run starts SLIMLINE_BENCH_SETTLE_S (1 s) after the previous one: in one process the last engine's idle
threads keep spinning for a while (torch's OpenMP pool, onnxruntime's), which cost the next engine 5–10 % here.
Another model: ``SLIMLINE_BENCH_DECODE_MODEL=gemma3`` (Gemma 3 270M; its folders from the weight-only bench's
``SLIMLINE_BENCH_DECODE_WORK`` dir, e.g. ``gemma3-ctx4096-work``).
Run: ``python -m benchmarks.bench_llm_decode`` (≈ 5 min); SLIMLINE_BENCH_THREADS (default 2), ROUNDS (5).
"""
from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

THREADS = int(os.environ.get("SLIMLINE_BENCH_THREADS", "2"))
ROUNDS = int(os.environ.get("SLIMLINE_BENCH_ROUNDS", "5"))
SETTLE_S = float(os.environ.get("SLIMLINE_BENCH_SETTLE_S", "1.0"))
PROMPT, NEW_TOKENS = 128, 64
VARIANTS = {"genai fp32 (builder -p fp32)": "fp32", "genai builder -p int4": "genai-int4",
            "Slimline int4 (default preset)": "slimline-int4-default-preset",
            "Slimline int4-fast preset": "slimline-int4-fast-preset",
            "Slimline int8 preset": "slimline-int8-preset"}
TORCH = "torch fp32 generate"
# SLIMLINE_BENCH_DECODE_MODEL: corpus id and title; SLIMLINE_BENCH_DECODE_WORK: the weight-only bench's work dir
# (e.g. gemma3-ctx4096-work for a context-capped build)
MODELS = {"smollm2": ("smollm2-135m-q4_1", "SmolLM2-135M"), "gemma3": ("gemma3-270m-q4_k_m", "Gemma 3 270M")}


def _torch_engine(hf: Path, prompt: list[int]) -> Callable[[], tuple[float, float]]:
    """Slimline's torch runner: HF ``generate`` (KV cache, greedy) timed by a streamer per emitted token."""
    import torch
    from transformers import AutoModelForCausalLM

    from slimline.core.lm.runners import TorchLMRunner

    lm = AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32).eval()
    lm.generation_config.eos_token_id = None  # always NEW_TOKENS tokens, like the genai runs
    runner = TorchLMRunner(lm, threads=THREADS)

    def once() -> tuple[float, float]:
        got = runner.generate(prompt, NEW_TOKENS)
        return got.prefill_ms, got.decode_tokens_per_s

    return once


def _genai_engine(folder: Path, prompt: list[int]) -> Callable[[], tuple[float, float]]:
    """Slimline's onnxruntime-genai path (``genai_generate``), EOS never reached: ``min_length`` is not set by
    it, so a variant that stops early is reported with fewer tokens rather than padded."""
    from slimline.core.lm.genai import genai_generate, genai_model

    model = genai_model(folder, THREADS)

    def once() -> tuple[float, float]:
        got = genai_generate(model, prompt, NEW_TOKENS, threads=THREADS)
        return got.prefill_ms, got.decode_tokens_per_s

    return once


def _folders(work: Path) -> dict[str, Path]:
    found = {}
    for label, sub in VARIANTS.items():
        onnx_files = sorted((work / sub).rglob("*.onnx"))
        genai = [p.parent for p in onnx_files if (p.parent / "genai_config.json").is_file()]
        if genai:
            found[label] = genai[0]
    # more folders to time beside them (an experiment's variants): {"label": "folder", ...}
    for label, folder in json.loads(os.environ.get("SLIMLINE_BENCH_DECODE_EXTRA", "{}")).items():
        found[label] = Path(folder)
    return found


def main() -> None:
    from benchmarks import bench_llm_weight_only as wo
    from benchmarks.bench_real_embedding import corpus
    from benchmarks.common import print_table, save_results
    from slimline.core.lm.text import load_tokenizer, text_windows

    model = os.environ.get("SLIMLINE_BENCH_DECODE_MODEL", "smollm2")
    if model not in MODELS:
        raise SystemExit(f"SLIMLINE_BENCH_DECODE_MODEL: {model!r} is not one of {', '.join(MODELS)}")
    corpus_id, title = MODELS[model]
    paths = corpus(corpus_id, "pydoc-sentences")
    if paths is None:
        return
    work = wo.CACHE / os.environ.get("SLIMLINE_BENCH_DECODE_WORK", f"{model}-work")
    if model == "smollm2":
        hf = wo.float_folder(paths[corpus_id], wo.CACHE / "smollm2-f32-hf")
    else:  # Slimline's own dequantized float folder of the GGUF (cached in the workspace)
        from slimline.core.models import open_model

        hf = Path(open_model(paths[corpus_id]).path)
    folders = _folders(work)
    if not all(label in folders for label in VARIANTS):
        print(f"building the ONNX variants first (benchmarks.bench_llm_weight_only) in {work}", flush=True)
        os.environ["SLIMLINE_BENCH_LLM_MODELS"] = model
        wo.main()
        folders = _folders(work)
    tok = load_tokenizer(hf)
    prompt = [int(t) for t in text_windows(paths["pydoc-sentences"], tok, length=PROMPT, count=1).ids[0][-PROMPT:]]
    engines: dict[str, Callable[[], tuple[float, float]]] = {TORCH: _torch_engine(hf, prompt)}
    engines.update({label: _genai_engine(folder, prompt) for label, folder in folders.items()})
    for once in engines.values():  # warm-up round, not counted
        once()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
    loads = [os.getloadavg()[0]]
    order = list(engines)
    rng = random.Random(0)
    for _ in range(ROUNDS):
        rng.shuffle(order)
        for name in order:
            time.sleep(SETTLE_S)  # the previous engine's idle threads stop spinning before this one is timed
            runs[name].append(engines[name]())
        loads.append(os.getloadavg()[0])
    torch_tps = [tps for _, tps in runs[TORCH]]
    rows, saved = [], []
    for name, got in runs.items():
        tps = [t for _, t in got]
        ratio = [t / b for t, b in zip(tps, torch_tps)]
        prefill = statistics.median(p for p, _ in got)
        rows.append([name, f"{statistics.median(tps):.1f} [{min(tps):.1f}, {max(tps):.1f}]",
                     f"{statistics.median(ratio):.2f}× [{min(ratio):.2f}, {max(ratio):.2f}]", f"{prefill:.0f}"])
        saved.append({"engine": name, "decode_tok_s": tps, "ratio_vs_torch": ratio,
                      "prefill_ms": [p for p, _ in got]})
    # noisy: some engine's rounds spread by more than a quarter of its median (the load moved under it)
    spread = {name: (max(t for _, t in got) - min(t for _, t in got)) / max(statistics.median(t for _, t in got), 1e-9)
              for name, got in runs.items()}
    noisy = max(spread.values()) > 0.25
    print_table(f"{title} decode ({work.name}), {PROMPT}-token prompt + {NEW_TOKENS} greedy tokens, {THREADS} threads, "
                f"{ROUNDS} interleaved rounds; load average {min(loads):.1f}–{max(loads):.1f} on "
                f"{os.cpu_count()} cores" + (f"; NOISY (spread up to {100 * max(spread.values()):.0f} %)"
                                             if noisy else ""),
                ["engine", "decode tok/s median [min, max]", "vs torch fp32 generate (paired)",
                 "prefill ms (median)"], rows)
    name = "llm_decode" if model == "smollm2" else f"llm_decode_{work.name}"
    path = save_results(name, {"model": title, "threads": THREADS, "rounds": ROUNDS, "prompt_tokens": PROMPT,
                                       "new_tokens": NEW_TOKENS, "load_average": loads, "noisy": noisy,
                                       "engines": saved, "folders": {k: str(v) for k, v in folders.items()}})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
