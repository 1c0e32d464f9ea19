"""Weight-only INT4/INT8 of a real LM: Slimline's presets beside onnxruntime's own tools, same run, same windows.

Models:
  * smollm2 — SmolLM2-135M-Instruct from the real-model corpus (``smollm2-135m-q4_1``: a Q4_1 GGUF; Llama family,
    135M parameters, 30 decoder blocks, tied embeddings, vocabulary 49152), dequantized by transformers' GGUF
    loader into a float32 HF folder. Its weights sit on a 4-bit grid (blocks of 32, float minimum), which a 4-bit
    quantizer with float zero points can nearly re-create.
  * smollm2-dithered — the same weights moved off that grid: uniform noise of ±½ grid step added per block of
    32 (Q4_1 step (max−min)/15; the Q8_0 embedding absmax/127), seed 0. A float model with no 4-bit grid left to
    re-create, standing in for a float-trained LM (no float-trained real LM is in the corpus yet).
  * gemma3 — Gemma 3 270M (pretrained) from the corpus (``gemma3-270m-q4_k_m``: llama.cpp's "Q4_K_M" mix; 268M
    parameters of which 168M are the tied 262144 × 640 embedding, 18 decoder blocks, sliding-window attention),
    opened by Slimline (its dequantized float32 folder in the workspace's GGUF cache). Most block weights sit on
    5- to 8-bit grids (Q5_0 63 %, Q6_K 12 %, Q8_0 2 %), only attn_output and half of ffn_down on Q4_K (24 %).
Each becomes the genai model builder's fp32 folder (``-p fp32 -e cpu``: KV cache, genai_config.json), the
reference. Peers, made from that fp32 folder here:
  * ORT dynamic INT8 per-channel — ``quantize_dynamic(per_channel=True)``;
  * ORT MatMulNBits RTN b32 / b128 — ``MatMulNBitsQuantizer(block_size=32|128)`` defaults (4-bit asymmetric;
    the tied embedding stays fp32: onnxruntime does not quantize a Gather that reads a Transpose);
  * ORT MatMulNBits 8-bit b32 — the same with ``bits=8``;
  * genai builder int4 — ``-p int4 -e cpu`` defaults (4-bit symmetric b32, accuracy_level 4, shared embedding).
Slimline: ``builtin.quantize_weight_only`` with its presets (int4 default, int4-fast, int8), run in-process with a
calibration text that does not overlap the evaluation windows; the int4 result is also re-timed with each
``accuracy_level`` (0/1/2/4) written into its MatMulNBits.

Figures (all computed here, none taken from the plugin): size = model.onnx + its external data vs fp32;
perplexity over 24 windows × 128 tokens of the corpus' real English (``pydoc-sentences``, the first part of the
file; calibration uses the rest), with the 95 % paired bootstrap interval of the change vs fp32; next-token
agreement; KL over fp32's top-32 + rest (a lower bound). Speed: onnxruntime-genai greedy generation of 64 tokens
after a 128-token prompt (prefill ms, decode tokens/s), and torch fp32 ``generate`` on the same threads.
All onnxruntime work runs with THREADS intra-op threads (default 2).

Run: ``python -m benchmarks.bench_llm_weight_only`` (about 40 min per model on 2 busy cores; needs
``make realmodels``). ``SLIMLINE_BENCH_LLM_MODELS=smollm2,gemma3`` picks models (default: all three);
``SLIMLINE_BENCH_LLM_SLOW=1`` adds Slimline int4 with GPTQ and with HQQ. ``SLIMLINE_BENCH_CONTEXT=gemma3=4096``
builds that model's genai folders (fp32 reference and genai int4) serving at most 4096 positions instead of its
``max_position_embeddings`` (Gemma 3: 32768): the builder's rotary cos/sin tables — fp32, never quantized — shrink
with it. Such a run works in ``<model>-ctx<N>-work`` and saves ``llm_weight_only_<model>-ctx<N>.json``, so the
uncapped figures stay as they were; every row records the context length and the bytes of those tables.
The genai folders are built by Slimline's own builder call (core.lm.genai.build_genai_model), which is what
makes Gemma 3 build at all with onnxruntime-genai 0.18 under transformers 5 (see core.lm.builder_compat).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

THREADS = int(os.environ.get("SLIMLINE_BENCH_THREADS", "2"))
WINDOWS, LENGTH, NEW_TOKENS = 24, 128, 64
CACHE = Path(os.environ.get("SLIMLINE_BENCH_CACHE", str(Path.home() / ".cache" / "slimline" / "bench"))) / "llm"
REPO = Path(__file__).resolve().parents[1]
COMPANIONS = ("genai_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
ROTARY_TABLES = ("cos_cache", "sin_cache")  # the builder's names for its RoPE tables (Gemma 3: also *_local)


def context_caps(spec: str | None = None) -> dict[str, int]:
    """``SLIMLINE_BENCH_CONTEXT`` ("gemma3=4096,smollm2=2048") as {model: positions}; empty: no caps."""
    raw = os.environ.get("SLIMLINE_BENCH_CONTEXT", "") if spec is None else spec
    caps: dict[str, int] = {}
    for item in filter(None, (x.strip() for x in raw.split(","))):
        name, _, value = item.partition("=")
        if not value.strip().isdigit():
            raise SystemExit(f"SLIMLINE_BENCH_CONTEXT: '{item}' is not model=positions (e.g. gemma3=4096)")
        caps[name.strip()] = int(value)
    return caps


# ----------------------------------------------------------------------------- models


def float_folder(gguf: Path, dest: Path) -> Path:
    """The GGUF dequantized to a float32 HF folder (transformers' loader; rebuilt so it saves)."""
    marker = dest / ".source.json"
    if marker.is_file() and json.loads(marker.read_text())["gguf"] == gguf.name:
        return dest
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    cfg = lm.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    fresh = type(lm)(cfg)
    fresh.load_state_dict(lm.state_dict())
    fresh.tie_weights()
    shutil.rmtree(dest, ignore_errors=True)
    fresh.save_pretrained(str(dest))
    tok.save_pretrained(str(dest))
    marker.write_text(json.dumps({"gguf": gguf.name}))
    return dest


def dithered_folder(src: Path, dest: Path, seed: int = 0) -> Path:
    """``src`` with every 2-D weight moved off its quantization grid by ±½ step of uniform noise per block of 32."""
    if (dest / ".source.json").is_file():
        return dest
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(seed)
    state = load_file(str(src / "model.safetensors"))
    out = {}
    for name, w in state.items():
        if w.ndim != 2 or w.shape[1] % 32:
            out[name] = w
            continue
        blocks = w.reshape(w.shape[0], -1, 32).astype(np.float64)
        if "embed" in name:  # Q8_0 in the GGUF: symmetric, absmax / 127 per block
            step = np.abs(blocks).max(axis=-1, keepdims=True) / 127.0
        else:                # Q4_1: (max - min) / 15 per block
            step = (blocks.max(axis=-1, keepdims=True) - blocks.min(axis=-1, keepdims=True)) / 15.0
        noisy = blocks + rng.uniform(-0.5, 0.5, size=blocks.shape) * step
        out[name] = noisy.reshape(w.shape).astype(np.float32)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copyfile(f, dest / f.name)
    save_file(out, str(dest / "model.safetensors"), metadata={"format": "pt"})
    (dest / ".source.json").write_text(json.dumps({"from": str(src), "dither": "±0.5 step per block of 32",
                                                   "seed": seed}))
    return dest


def builder(hf: Path, out: Path, precision: str, context: int | None = None) -> Path:
    """The genai model builder's folder for ``hf`` at ``precision`` (cached), built through Slimline's one caller
    of the builder (it fixes what the builder misreads, e.g. Gemma 3's RoPE config under transformers 5);
    ``context``: serve at most that many positions."""
    if (out / "model.onnx").is_file() and (out / "genai_config.json").is_file():
        from slimline.core.lm.genai import context_length_of

        if context is None or context_length_of(out) == context:
            return out / "model.onnx"
    from slimline.core.lm.genai import build_genai_model

    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))  # the builder's child process inherits it
    return build_genai_model(hf, out, precision, context_length=context) / "model.onnx"  # type: ignore[arg-type]


def rotary_bytes(path: Path) -> int:
    """Bytes of the RoPE cos/sin tables: float initializers no weight-only quantizer touches."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    total = 0
    for t in m.graph.initializer:
        if any(k in t.name for k in ROTARY_TABLES):
            total += int(np.prod(t.dims)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total


def onnx_bytes(path: Path) -> int:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    extra = {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"}
    return path.stat().st_size + sum((path.parent / x).stat().st_size for x in extra if (path.parent / x).exists())


def _save(model: Any, folder: Path, like: Path) -> Path:
    import onnx

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=1024)
    for name in COMPANIONS:
        if (like.parent / name).is_file():
            shutil.copyfile(like.parent / name, folder / name)
    return folder / "model.onnx"


def peers(fp32: Path, work: Path) -> dict[str, Path]:
    """onnxruntime's own tools on the fp32 folder, with their defaults."""
    import onnx

    from slimline.plugins.weight_only.quant import quiet

    with quiet():  # the quantizer configures the root logger at INFO when imported
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    out: dict[str, Path] = {}
    dyn = work / "ort-dynamic-int8"
    if not (dyn / "model.onnx").is_file():
        dyn.mkdir(parents=True, exist_ok=True)
        with quiet():
            quantize_dynamic(str(fp32), str(dyn / "model.onnx"), per_channel=True, weight_type=QuantType.QInt8,
                             use_external_data_format=True)
        for name in COMPANIONS:
            if (fp32.parent / name).is_file():
                shutil.copyfile(fp32.parent / name, dyn / name)
    out["ORT dynamic INT8 per-channel"] = dyn / "model.onnx"
    for label, bits, block in (("ORT MatMulNBits RTN b32", 4, 32), ("ORT MatMulNBits RTN b128", 4, 128),
                               ("ORT MatMulNBits 8-bit b32", 8, 32)):
        folder = work / label.lower().replace(" ", "-")
        if not (folder / "model.onnx").is_file():
            with quiet():
                q = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=bits, block_size=block)
                q.process()
            _save(q.model.model, folder, fp32)
        out[label] = folder / "model.onnx"
    return out


def ours(fp32: Path, calib: Path, work: Path) -> tuple[dict[str, Path], dict[str, dict[str, Any]]]:
    """Slimline's presets (and, with SLIMLINE_BENCH_LLM_SLOW=1, int4 with GPTQ and HQQ) run in-process."""
    from slimline.core.models import open_model
    from slimline.core.plugin import StepContext
    from slimline.plugins.weight_only import QuantizeWeightOnly

    runs = {"Slimline int4 (default preset)": {}, "Slimline int4-fast preset": {"preset": "int4-fast"},
            "Slimline int8 preset": {"preset": "int8"}}
    if os.environ.get("SLIMLINE_BENCH_LLM_SLOW") == "1":
        runs["Slimline int4, GPTQ"] = {"algorithm": "gptq"}
        runs["Slimline int4, HQQ"] = {"algorithm": "hqq"}
    paths: dict[str, Path] = {}
    info: dict[str, dict[str, Any]] = {}
    plugin = QuantizeWeightOnly()
    for label, params in runs.items():
        folder = work / label.lower().replace(" ", "-").replace(",", "").replace("(", "").replace(")", "")
        shutil.rmtree(folder, ignore_errors=True)
        p = plugin.Params(text_file=str(calib), **params)
        t0 = time.perf_counter()
        out = plugin.run(open_model(fp32), p, StepContext(work_dir=folder, threads=THREADS))
        info[label] = {"seconds": time.perf_counter() - t0, "metrics": out.metrics, "warnings": out.warnings,
                       "layers": _bits(out.tables["weight_only_layers"]), "settings": p.resolved().describe()}
        paths[label] = Path(out.model.path)
    return paths, info


def _bits(rows: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        key = f"{r['kind']}@{r['bits'] or 'fp32'}"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def with_accuracy_level(model: Path, level: int, dest: Path) -> Path:
    """A copy of ``model``'s folder whose MatMulNBits run at ``level`` (the weights are the same)."""
    import onnx

    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(model.parent, dest)
    m = onnx.load(str(dest / model.name), load_external_data=False)
    for n in m.graph.node:
        if n.op_type == "MatMulNBits":
            keep = [a for a in n.attribute if a.name != "accuracy_level"]
            del n.attribute[:]
            n.attribute.extend(keep)
            if level:
                n.attribute.append(onnx.helper.make_attribute("accuracy_level", level))
    onnx.save_model(m, str(dest / model.name))
    return dest / model.name


# ----------------------------------------------------------------------------- measuring


def split_text(text: Path, tok: Any, work: Path) -> tuple[Path, Path]:
    """(evaluation text: enough lines for WINDOWS × LENGTH tokens, calibration text: the rest of the file)."""
    lines = text.read_text(encoding="utf-8").splitlines(keepends=True)
    need, got, cut = WINDOWS * LENGTH + LENGTH, 0, len(lines)
    for i, line in enumerate(lines):
        got += len(tok(line, add_special_tokens=False)["input_ids"])
        if got >= need:
            cut = i + 1
            break
    work.mkdir(parents=True, exist_ok=True)
    ev, cal = work / "eval.txt", work / "calibration.txt"
    ev.write_text("".join(lines[:cut]), encoding="utf-8")
    cal.write_text("".join(lines[cut:]), encoding="utf-8")
    return ev, cal


def score(path: Path, windows: Any, reference: Any = None) -> Any:
    import onnx

    from slimline.core.lm.onnx_lm import OnnxLM, read_signature

    sig = read_signature(onnx.load(str(path), load_external_data=False), path.parent)
    return OnnxLM(path, sig, threads=THREADS).score(windows, reference)


def genai_speed(folder: Path, prompt: np.ndarray) -> dict[str, float]:
    """onnxruntime-genai: prefill ms of the prompt, then decode tokens/s over NEW_TOKENS greedy tokens."""
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": THREADS, "inter_op_num_threads": 1}}}}))
    model = og.Model(config)
    best: dict[str, float] = {}
    for _ in range(2):  # the first round warms up; the faster of the two is kept
        params = og.GeneratorParams(model)
        total = int(prompt.size) + NEW_TOKENS
        params.set_search_options(max_length=total, min_length=total, do_sample=False)
        gen = og.Generator(model, params)
        t0 = time.perf_counter()
        gen.append_tokens(prompt.astype(np.int32)[None, :])
        t1 = time.perf_counter()
        steps = 0
        while not gen.is_done():
            gen.generate_next_token()
            steps += 1
        t2 = time.perf_counter()
        got = {"prefill_ms": (t1 - t0) * 1e3, "decode_tok_s": steps / max(t2 - t1, 1e-9)}
        if not best or got["decode_tok_s"] > best["decode_tok_s"]:
            best = got
        del gen
    return best


_TORCH_SPEED = """
import json, sys, time
import numpy as np, torch
from transformers import AutoModelForCausalLM
hf, threads, new, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
torch.set_num_threads(threads)
lm = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
ids = torch.tensor([prompt], dtype=torch.long)
with torch.no_grad():
    lm(ids)
    t0 = time.perf_counter(); lm(ids); prefill = time.perf_counter() - t0
    t0 = time.perf_counter()
    lm.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
    total = time.perf_counter() - t0
print(json.dumps({"prefill_ms": prefill * 1e3, "decode_tok_s": (new - 1) / max(total - prefill, 1e-9)}))
"""


def torch_speed(hf: Path, prompt: np.ndarray) -> dict[str, Any]:
    """torch fp32 ``generate`` (greedy, NEW_TOKENS tokens) on THREADS threads, in a child process (its own
    memory, nothing of the ONNX runs around it): prefill ms and decode tokens/s."""
    proc = subprocess.run([sys.executable, "-c", _TORCH_SPEED, str(hf), str(THREADS), str(NEW_TOKENS),
                           json.dumps([int(t) for t in prompt])], capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-300:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_model(name: str, hf: Path, text: Path, work: Path, context: int | None = None) -> dict[str, Any]:
    from slimline.core.lm.genai import context_length_of
    from slimline.core.lm.score import compare, perplexity
    from slimline.core.lm.text import load_tokenizer, text_windows

    fp32 = builder(hf, work / "fp32", "fp32", context)
    tok = load_tokenizer(fp32.parent)
    ev, cal = split_text(text, tok, work)
    windows = text_windows(ev, tok, length=LENGTH, count=WINDOWS)
    if windows.count < WINDOWS:
        raise RuntimeError(f"{ev} holds {windows.count} windows, not {WINDOWS}")
    print(f"\n{name}: evaluation on {windows.describe()} ({text.name}, first part); calibration on "
          f"{cal.name} ({cal.stat().st_size} bytes, the rest of the file); {THREADS} threads", flush=True)
    variants: dict[str, Path] = {"fp32 (genai builder -p fp32)": fp32}
    variants.update(peers(fp32, work))
    variants["genai builder -p int4"] = builder(hf, work / "genai-int4", "int4", context)
    mine, info = ours(fp32, cal, work)
    variants.update(mine)
    int4 = mine["Slimline int4 (default preset)"]
    for level in (0, 1, 2):
        variants[f"Slimline int4, accuracy_level {level}"] = with_accuracy_level(int4, level, work / f"acc{level}")
    ref = score(fp32, windows)
    base_bytes = onnx_bytes(fp32)
    prompt = windows.ids[0][-LENGTH:]
    rows = []
    for label, path in variants.items():
        t0 = time.perf_counter()
        got = ref if path == fp32 else score(path, windows, ref.summaries)
        c = None if path == fp32 else compare(ref.summaries, got.summaries, got.logp_of_ref_top)
        ppl = perplexity(got.summaries)
        try:
            speed = genai_speed(path.parent, prompt)
        except Exception as exc:  # noqa: BLE001 - a variant genai cannot run still gets its other figures
            speed = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
        rows.append({"variant": label, "size_ratio": onnx_bytes(path) / base_bytes, "bytes": onnx_bytes(path),
                     "context_length": context_length_of(path.parent), "rotary_table_bytes": rotary_bytes(path),
                     "perplexity": ppl.value, "perplexity_low": ppl.low, "perplexity_high": ppl.high,
                     "increase": 0.0 if c is None else c.increase,
                     "increase_low": 0.0 if c is None else c.increase_low,
                     "increase_high": 0.0 if c is None else c.increase_high,
                     "agreement": 1.0 if c is None else c.agreement, "kl_topk": 0.0 if c is None else c.kl_topk,
                     **speed, "score_seconds": time.perf_counter() - t0, **({"slimline": info[label]}
                                                                          if label in info else {})})
        print(f"  measured {label} ({time.perf_counter() - t0:.0f} s)", flush=True)
    torch_fp32 = torch_speed(hf, prompt)
    return {"model": name, "windows": windows.describe(), "threads": THREADS, "rows": rows,
            "context_length": context_length_of(fp32.parent), "context_cap": context,
            "torch_fp32_generate": torch_fp32, "tokens_scored": windows.scored_tokens}


def print_model(result: dict[str, Any]) -> None:
    from benchmarks.common import print_table

    torch_tps = result["torch_fp32_generate"].get("decode_tok_s") or float("nan")
    rows = []
    for r in result["rows"]:
        tps = r.get("decode_tok_s")
        rotary = r.get("rotary_table_bytes")
        rows.append([r["variant"], f"{r['size_ratio']:.3f}", str(r.get("context_length") or "?"),
                     "?" if rotary is None else f"{rotary / 1e6:.1f}",
                     f"{r['perplexity']:.3f}",
                     "—" if r["increase"] == 0 and r["agreement"] == 1.0 else
                     f"{100 * r['increase']:+.2f} % [{100 * r['increase_low']:+.1f}, {100 * r['increase_high']:+.1f}]",
                     f"{r['agreement']:.3f}", f"{r['kl_topk']:.4f}",
                     f"{r['prefill_ms']:.0f}" if "prefill_ms" in r else r.get("error", "?")[:30],
                     f"{tps:.1f} ({tps / torch_tps:.1f}×)" if tps else "—"])
    print_table(f"{result['model']}: {result['windows']}; {result['threads']} threads; torch fp32 generate "
                f"{torch_tps:.1f} tokens/s",
                ["variant", "size vs fp32", "context", "rotary MB", "perplexity", "vs fp32 (95 % interval)",
                 "next-token agreement", "KL top-32", "prefill ms (128)", "decode tok/s (vs torch)"], rows)
    for r in result["rows"]:
        if "slimline" in r:
            s = r["slimline"]
            print(f"  {r['variant']}: {s['settings']}; {s['layers']}; {s['seconds']:.0f} s"
                  + (f"; warnings: {' | '.join(s['warnings'])}" if s["warnings"] else ""))


def main() -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks.bench_real_embedding import corpus

    wanted = os.environ.get("SLIMLINE_BENCH_LLM_MODELS", "smollm2,smollm2-dithered,gemma3").split(",")
    caps = context_caps()
    need = (["smollm2-135m-q4_1"] if any(w.startswith("smollm2") for w in wanted) else []) + \
        (["gemma3-270m-q4_k_m"] if "gemma3" in wanted else [])
    paths = corpus(*need, "pydoc-sentences")
    if paths is None:
        return
    try:
        import onnxruntime_genai  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        print(f"SKIPPED: needs the llm extra ({exc.name} is missing): pip install 'slimline[llm]'")
        return
    from benchmarks.common import save_results

    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    text = paths["pydoc-sentences"]
    models: dict[str, Path] = {}
    if "smollm2-135m-q4_1" in paths:
        hf = float_folder(paths["smollm2-135m-q4_1"], CACHE / "smollm2-f32-hf")
        models["smollm2"] = hf
        if "smollm2-dithered" in wanted:
            models["smollm2-dithered"] = dithered_folder(hf, CACHE / "smollm2-dithered-hf")
    if "gemma3-270m-q4_k_m" in paths:
        from slimline.core.models import open_model

        models["gemma3"] = Path(open_model(paths["gemma3-270m-q4_k_m"]).path)  # the dequantized float32 folder
    results = []
    for name, folder in models.items():
        if name not in wanted:
            continue
        cap = caps.get(name)
        tag = f"{name}-ctx{cap}" if cap else name  # a capped run keeps its own work dir and results file
        result = bench_model(tag, folder, text, CACHE / f"{tag}-work", cap)
        results.append(result)
        save_results(f"llm_weight_only_{tag}", {"models": [result]})  # kept even if a later model fails
        print_model(result)
    done = [r["model"] for r in results]
    name = "llm_weight_only" if set(done) == {"smollm2", "smollm2-dithered", "gemma3"} else \
        "llm_weight_only_" + "_".join(done)
    path = save_results(name, {"models": results})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
