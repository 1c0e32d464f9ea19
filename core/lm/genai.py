"""onnxruntime-genai: the KV-cache ONNX format LLMs deploy in, built and run here.

The model builder turns an HF causal-LM folder into ``model.onnx`` (+ ``.data``) beside a
``genai_config.json`` and the tokenizer — a folder the generate API runs with a KV cache,
which is what makes ONNX LLMs fast. The same ONNX also runs in plain onnxruntime with an
empty past (every ``past_key_values.*`` of sequence length 0): all positions' logits come
back, which is how perplexity is measured on it. This module is the one place that builds
such folders and drives the generate API.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from slimline.core.errors import SlimlineError

GenaiPrecision = Literal["fp32", "fp16", "int4"]
GENAI_CONFIG = "genai_config.json"
# files beside the ONNX that the generate API and the tokenizer need (copied along by steps that rewrite the ONNX)
COMPANIONS = (GENAI_CONFIG, "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
              "generation_config.json", "config.json")


class GenaiError(SlimlineError):
    """The model builder or the generate API failed; the message carries their own words."""


def genai_available() -> bool:
    try:
        import onnxruntime_genai  # noqa: F401
    except ImportError:
        return False
    return True


def genai_folder_of(model_path: str | Path) -> Path | None:
    """The folder holding ``genai_config.json`` for this ONNX file or folder, or None."""
    p = Path(model_path)
    folder = p if p.is_dir() else p.parent
    return folder if (folder / GENAI_CONFIG).is_file() else None


def genai_onnx_name(folder: Path) -> str:
    """The decoder ONNX file name that ``genai_config.json`` points at."""
    cfg = json.loads((folder / GENAI_CONFIG).read_text(encoding="utf-8"))
    return str(cfg["model"]["decoder"]["filename"])


def copy_companions(src_model: str | Path, dst_dir: str | Path, onnx_name: str | None = None) -> list[str]:
    """Copy the genai config and tokenizer files beside ``src_model`` into ``dst_dir``.

    ``onnx_name``: the output ONNX's file name when it differs from the source's (the
    config is rewritten to point at it). Returns the names copied.
    """
    src = Path(src_model)
    src_dir = src if src.is_dir() else src.parent
    dst = Path(dst_dir)
    copied: list[str] = []
    for name in COMPANIONS:
        f = src_dir / name
        if f.is_file():
            shutil.copy2(f, dst / name)
            copied.append(name)
    if onnx_name and (dst / GENAI_CONFIG).is_file():
        cfg = json.loads((dst / GENAI_CONFIG).read_text(encoding="utf-8"))
        cfg["model"]["decoder"]["filename"] = onnx_name
        (dst / GENAI_CONFIG).write_text(json.dumps(cfg, indent=4), encoding="utf-8")
    return copied


def build_genai_model(hf_dir: str | Path, out_dir: str | Path, precision: GenaiPrecision = "fp32", *,
                      extra_options: dict[str, str] | None = None, timeout_s: float = 3600,
                      log: Callable[[str], None] | None = None) -> Path:
    """Run the model builder on ``hf_dir``; ``out_dir`` appears whole or not at all.

    Runs as a child process: the builder prints progress bars and may hold GBs while it
    works, and its failures (an unsupported architecture) must come back as a message.
    """
    src, out = Path(hf_dir), Path(out_dir)
    if not (src / "config.json").is_file():
        raise GenaiError(f"{src} is not a Hugging Face model folder (no config.json)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    cache = Path(tempfile.mkdtemp(prefix=".genai-cache.", dir=out.parent))
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(src), "-o", str(tmp),
           "-p", precision, "-e", "cpu", "-c", str(cache)]
    if extra_options:
        cmd += ["--extra_options", *[f"{k}={v}" for k, v in extra_options.items()]]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0 or not (tmp / GENAI_CONFIG).is_file():
            tail = _error_tail(proc.stderr or proc.stdout)
            raise GenaiError(f"the onnxruntime-genai model builder failed on {src.name} ({precision}): {tail}")
        if log is not None:
            log(f"model builder: {src.name} → {precision} KV-cache ONNX")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        return out
    except subprocess.TimeoutExpired:
        raise GenaiError(f"the model builder did not finish within {timeout_s:.0f} s on {src.name}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)


def _error_tail(text: str) -> str:
    """The builder's own reason: the last non-progress lines of its output."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip() and "it/s" not in ln]
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln or "not supported" in ln.lower():
            return ln[:500]
    return (lines[-1] if lines else "no output")[:500]


def head_size_of(folder: str | Path) -> int | None:
    """The attention head size the KV cache is laid out with, from ``genai_config.json``."""
    f = Path(folder) / GENAI_CONFIG
    if not f.is_file():
        return None
    dec = json.loads(f.read_text(encoding="utf-8")).get("model", {}).get("decoder", {})
    return int(dec["head_size"]) if "head_size" in dec else None


def empty_past_feeds(session_inputs: list[Any], input_ids: np.ndarray,
                     head_size: int | None = None) -> dict[str, np.ndarray]:
    """Feeds for one full forward pass of a KV-cache decoder: the ids, a full mask, empty pasts.

    ``head_size`` fills a symbolic last past dim (the builder names it ``kv_cache_dim``).
    """
    batch, seq = input_ids.shape
    feeds: dict[str, np.ndarray] = {}
    for inp in session_inputs:
        name, shape = inp.name, list(inp.shape)
        if name == "input_ids":
            feeds[name] = input_ids.astype(np.int64)
        elif name == "attention_mask":
            feeds[name] = np.ones((batch, seq), dtype=np.int64)
        elif name == "position_ids":
            feeds[name] = np.broadcast_to(np.arange(seq, dtype=np.int64), (batch, seq)).copy()
        elif name.startswith("past_key_values") or name.startswith("past_"):
            dtype = np.float16 if "float16" in str(inp.type) else np.float32
            dims = [batch if i == 0 else (0 if i == 2 else int(d) if isinstance(d, int) else 0)
                    for i, d in enumerate(shape)]
            if len(dims) == 4 and dims[3] == 0 and head_size:
                dims[3] = int(head_size)
            if len(dims) == 4 and dims[3] == 0:
                raise GenaiError(f"cannot tell the head size of '{name}' (shape {shape})")
            feeds[name] = np.zeros(dims, dtype=dtype)
        else:
            raise GenaiError(f"unexpected decoder input '{name}'")
    return feeds


class Generation(BaseModel):
    """One greedy continuation with its timing (prefill: the prompt pass; decode: the new tokens)."""

    prompt_tokens: int
    tokens: list[int]
    prefill_ms: float
    decode_tokens_per_s: float
    threads: int
    engine: str                 # "onnxruntime-genai 0.18.0 (KV cache)", "torch 2.13 generate" ...


def genai_model(folder: str | Path, threads: int = 0) -> Any:
    """An ``og.Model`` for the folder, limited to ``threads`` intra-op threads (0: the runtime's default)."""
    import onnxruntime_genai as og

    cfg = og.Config(str(folder))
    if threads:
        cfg.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": int(threads), "inter_op_num_threads": 1}}}}))
    try:
        return og.Model(cfg)
    except Exception as exc:
        raise GenaiError(f"onnxruntime-genai cannot load {folder}: {str(exc).splitlines()[0][:300]}") from None


def genai_generate(model: Any, prompt_ids: list[int], max_new_tokens: int, *, threads: int = 0) -> Generation:
    """Greedy decoding through the generate API (KV cache), prefill and decode timed apart; stops at EOS.

    ``append_tokens`` runs the prompt pass (prefill); each ``generate_next_token`` picks a token
    and runs one cached step (decode).
    """
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt_ids) + max_new_tokens, do_sample=False)
    gen = og.Generator(model, params)
    t0 = time.perf_counter()
    gen.append_tokens(list(map(int, prompt_ids)))
    t1 = time.perf_counter()
    tokens: list[int] = []
    while not gen.is_done() and len(tokens) < max_new_tokens:
        gen.generate_next_token()
        tokens.append(int(gen.get_next_tokens()[0]))
    t2 = time.perf_counter()
    decode_s = max(t2 - t1, 1e-9)
    return Generation(prompt_tokens=len(prompt_ids), tokens=tokens, prefill_ms=(t1 - t0) * 1000.0,
                      decode_tokens_per_s=len(tokens) / decode_s, threads=threads,
                      engine=f"onnxruntime-genai {og.__version__} (KV cache)")
