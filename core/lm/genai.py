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


def companion_paths(model_path: str | Path) -> list[Path]:
    """The genai config and tokenizer files beside a genai folder's ONNX ([] for any other model)."""
    folder = genai_folder_of(model_path)
    if folder is None:
        return []
    return [folder / n for n in COMPANIONS if (folder / n).is_file()]


def copy_companions(src_model: str | Path, dst_dir: str | Path, onnx_name: str | None = None) -> list[str]:
    """Copy the genai config and tokenizer files beside ``src_model`` into ``dst_dir``.

    ``onnx_name``: the output ONNX's file name when it differs from the source's (the
    config is rewritten to point at it). Returns the names copied.
    """
    from slimline.core.fsutil import atomic_path, atomic_write_text

    src = Path(src_model)
    src_dir = src if src.is_dir() else src.parent
    dst = Path(dst_dir)
    if src_dir.resolve() == dst.resolve():
        return []
    copied: list[str] = []
    for name in COMPANIONS:
        f = src_dir / name
        if f.is_file():
            with atomic_path(dst / name) as tmp:
                shutil.copy2(f, tmp)
            copied.append(name)
    if onnx_name and (dst / GENAI_CONFIG).is_file():
        cfg = json.loads((dst / GENAI_CONFIG).read_text(encoding="utf-8"))
        cfg["model"]["decoder"]["filename"] = onnx_name
        atomic_write_text(dst / GENAI_CONFIG, json.dumps(cfg, indent=4))
    return copied


def build_genai_model(hf_dir: str | Path, out_dir: str | Path, precision: GenaiPrecision = "fp32", *,
                      extra_options: dict[str, str] | None = None, timeout_s: float = 3600,
                      log: Callable[[str], None] | None = None, cancel: Any = None,
                      context_length: int | None = None) -> Path:
    """Run the model builder on ``hf_dir``; ``out_dir`` appears whole or not at all.

    Runs as a child process: the builder prints progress bars and may hold GBs while it
    works, and its failures (an unsupported architecture) must come back as a message.
    ``cancel`` (a CancelToken) stops the child within half a second. ``context_length``: serve
    at most that many positions (rotary tables, genai_config.json's ``context_length`` and
    ``search.max_length``) instead of the config's ``max_position_embeddings`` — smaller tables
    and KV-cache allocation for short-context deployments.
    """
    from slimline.core.lm.builder_compat import CONTEXT_ARG, default_options, needs_compat

    src, out = Path(hf_dir), Path(out_dir)
    if not (src / "config.json").is_file():
        raise GenaiError(f"{src} is not a Hugging Face model folder (no config.json)")
    cap = _context_cap(src, context_length)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    cache = Path(tempfile.mkdtemp(prefix=".genai-cache.", dir=out.parent))
    # Gemma 3 under transformers 5: the builder misreads its RoPE config; the compat module fixes the config it
    # reads, and applies the context-length cap there too
    compat = needs_compat(src) or cap is not None
    module = "slimline.core.lm.builder_compat" if compat else "onnxruntime_genai.models.builder"
    cmd = [sys.executable, "-m", module, "-i", str(src), "-o", str(tmp), "-p", precision, "-e", "cpu", "-c", str(cache)]
    if cap is not None:
        cmd += [CONTEXT_ARG, str(cap)]
    options = {**default_options(src), **(extra_options or {})}
    if options:
        cmd += ["--extra_options", *[f"{k}={v}" for k, v in options.items()]]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = _wait(child, timeout_s, cancel, src.name)
        if child.returncode != 0 or not (tmp / GENAI_CONFIG).is_file():
            tail = _error_tail(stderr or stdout)
            raise GenaiError(f"the onnxruntime-genai model builder failed on {src.name} ({precision}): {tail}")
        if log is not None:
            log(f"model builder: {src.name} → {precision} KV-cache ONNX"
                + (f", context length capped at {cap} positions" if cap is not None else ""))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        return out
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)


def _context_cap(src: Path, n: int | None) -> int | None:
    """The cap to build with: None when not asked for or not below the model's own length; refuses bad values."""
    from slimline.core.lm.builder_compat import context_length_problem, model_context_length

    if not n:
        return None
    try:
        cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GenaiError(f"cannot read {src / 'config.json'} to cap the context length: {exc}") from None
    why = context_length_problem(cfg, int(n))
    if why:
        raise GenaiError(f"{src.name}: {why}")
    return int(n) if int(n) < (model_context_length(cfg) or 0) else None


def context_length_of(folder: str | Path) -> int | None:
    """``model.context_length`` from a genai folder's ``genai_config.json`` (the positions it serves), or None."""
    try:
        cfg = json.loads((Path(folder) / GENAI_CONFIG).read_text(encoding="utf-8")).get("model", {})
    except (OSError, ValueError):
        return None
    return int(cfg["context_length"]) if cfg.get("context_length") else None


def _wait(child: subprocess.Popen[str], timeout_s: float, cancel: Any, name: str) -> tuple[str, str]:
    """The child's (stdout, stderr) once it ends; raises on timeout or cancel (the caller kills it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return child.communicate(timeout=0.5)
        except subprocess.TimeoutExpired:
            if cancel is not None:
                cancel.raise_if_cancelled()
            if time.monotonic() > deadline:
                raise GenaiError(f"the model builder did not finish within {timeout_s:.0f} s on {name}") from None


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


def sliding_past(dim: Any) -> bool:
    """Whether a past input's sequence dim is a sliding-window cache (the builder names it ``past_sliding_length``)."""
    return isinstance(dim, str) and "sliding" in dim


def empty_past_feeds(session_inputs: list[Any], input_ids: np.ndarray, head_size: int | None = None,
                     sliding_window: int | None = None) -> dict[str, np.ndarray]:
    """Feeds for one full forward pass of a KV-cache decoder: the ids, a full mask, empty pasts.

    ``head_size`` fills a symbolic last past dim (the builder names it ``kv_cache_dim``).
    ``sliding_window``: the capacity of a sliding-window layer's cache (Gemma 3, Mistral): its
    attention kernel refuses a buffer smaller than the window even when nothing in it is valid yet —
    the mask over the ids alone says the past is empty, so zeros of that length are an empty past.
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
            if len(shape) > 2 and sliding_past(shape[2]) and not sliding_window:
                raise GenaiError(f"'{name}' is a sliding-window cache ({shape[2]}) and its window size is unknown; "
                                 f"keep the model's {GENAI_CONFIG} beside it")
            past_len = int(sliding_window or 0) if len(shape) > 2 and sliding_past(shape[2]) else 0
            dims = [batch if i == 0 else (past_len if i == 2 else int(d) if isinstance(d, int) else 0)
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
    try:
        params.set_search_options(max_length=len(prompt_ids) + max_new_tokens, do_sample=False)
        gen = og.Generator(model, params)
    except RuntimeError as exc:  # "max_length (60) cannot be greater than model context_length (32)"
        raise GenaiError(f"onnxruntime-genai refused {len(prompt_ids)} prompt + {max_new_tokens} new tokens: "
                         f"{str(exc).strip()[:300]}", hint="shorten the prompt or the generation, or rebuild the "
                         "export with a larger context length (Convert to ONNX: lm_context_length)") from None
    t0 = time.perf_counter()
    tokens: list[int] = []
    try:
        gen.append_tokens(list(map(int, prompt_ids)))
        t1 = time.perf_counter()
        while not gen.is_done() and len(tokens) < max_new_tokens:
            gen.generate_next_token()
            tokens.append(int(gen.get_next_tokens()[0]))
    except Exception as exc:  # onnxruntime's kernel errors arrive as RuntimeError with its own words
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:400]
        raise GenaiError(f"onnxruntime-genai failed while generating (after {len(tokens)} tokens): {first}") \
            from None
    t2 = time.perf_counter()
    decode_s = max(t2 - t1, 1e-9)
    return Generation(prompt_tokens=len(prompt_ids), tokens=tokens, prefill_ms=(t1 - t0) * 1000.0,
                      decode_tokens_per_s=len(tokens) / decode_s, threads=threads,
                      engine=f"onnxruntime-genai {og.__version__} (KV cache)")


def genai_generator(folder: str | Path, threads: int = 0) -> Callable[[list[int], int], Generation]:
    """``(prompt ids, new tokens) -> Generation`` through the folder's model, loaded once."""
    model = genai_model(folder, threads)

    def generate(prompt_ids: list[int], max_new_tokens: int) -> Generation:
        return genai_generate(model, prompt_ids, max_new_tokens, threads=threads)

    return generate


# ------------------------------------------------------------- the KV-cache decoder as a full-sequence model

PAST_PREFIXES = ("past_key_values.", "past_key_values_", "past.", "past_")
FILLED_INPUTS = ("position_ids",)   # filled with 0..T-1 when the caller does not give them


class KVCacheLayout(BaseModel):
    """How a KV-cache decoder ONNX runs one full sequence: every past input empty, all logits back.

    Slimline shows such a model with the inputs a plain causal LM has (``input_ids``,
    ``attention_mask``); the session fills the rest, so evaluation, latency, export parity
    and the data tools all run it like any other ONNX LM.
    """

    past_inputs: list[str]
    filled_inputs: list[str]          # past_* and position_ids: fed by the session, hidden from the handle
    present_outputs: list[str]
    head_size: int | None
    layers: int
    genai_folder: bool                # genai_config.json beside it (generate API ready)
    context_length: int | None = None
    sliding_window: int | None = None  # capacity of the sliding-window layers' cache (see empty_past_feeds)


def kv_cache_layout(model: Any, path: str | Path) -> KVCacheLayout | None:
    """The layout of a KV-cache decoder (an ``onnx.ModelProto`` without weights), or None for other graphs.

    Head size: a static last past dim, else ``head_size`` from ``genai_config.json``. Sliding window: the
    attention nodes' ``local_window_size`` where they keep a window-sized cache, else ``genai_config.json``.
    """
    g = model.graph
    inits = {t.name for t in g.initializer}
    names = [i.name for i in g.input if i.name not in inits]
    past = [n for n in names if n.startswith(PAST_PREFIXES)]
    if not past or "input_ids" not in names:
        return None
    first = next(i for i in g.input if i.name == past[0])
    dims = list(first.type.tensor_type.shape.dim)
    head = int(dims[3].dim_value) if len(dims) == 4 and dims[3].dim_value > 0 else None
    folder = genai_folder_of(path)
    context = None
    if folder is not None:
        try:
            cfg = json.loads((folder / GENAI_CONFIG).read_text(encoding="utf-8")).get("model", {})
        except (OSError, ValueError):
            cfg = {}
        head = head or (int(cfg["decoder"]["head_size"]) if "head_size" in cfg.get("decoder", {}) else None)
        context = int(cfg["context_length"]) if cfg.get("context_length") else None
    window = graph_sliding_window(model) or (sliding_window_of(folder) if folder is not None else None)
    presents = [o.name for o in g.output if o.name.startswith(("present", "present_key_values"))]
    filled = past + [n for n in names if n in FILLED_INPUTS]
    return KVCacheLayout(past_inputs=past, filled_inputs=filled, present_outputs=presents, head_size=head,
                         layers=max(1, len(past) // 2), genai_folder=folder is not None, context_length=context,
                         sliding_window=window)


def graph_sliding_window(model: Any) -> int | None:
    """The largest ``local_window_size`` of the attention nodes that keep a window-sized cache, or None."""
    found = 0
    for n in model.graph.node:
        if n.op_type != "GroupQueryAttention":
            continue
        attrs = {a.name: a.i for a in n.attribute if a.name in ("local_window_size", "sliding_window_cache")}
        if attrs.get("sliding_window_cache") and attrs.get("local_window_size", 0) > 0:
            found = max(found, int(attrs["local_window_size"]))
    return found or None


def sliding_window_of(folder: str | Path) -> int | None:
    """``decoder.sliding_window.window_size`` from the folder's ``genai_config.json``, or None."""
    f = Path(folder) / GENAI_CONFIG
    try:
        dec = json.loads(f.read_text(encoding="utf-8")).get("model", {}).get("decoder", {})
    except (OSError, ValueError):
        return None
    window = (dec.get("sliding_window") or {}).get("window_size")
    return int(window) if window else None


def kv_view_specs(inputs: list[Any], outputs: list[Any], layout: KVCacheLayout,
                  default_sequence: int = 128) -> tuple[list[Any], list[Any], dict[str, int]]:
    """(inputs, outputs, dim defaults) a handle shows for a KV-cache decoder run with an empty past.

    The attention mask covers past + new tokens (``total_sequence_length``); with an empty past
    that is the sequence itself, so it is shown with the ids' dims.
    """
    shown = [s for s in inputs if s.name not in layout.filled_inputs]
    ids = next(s for s in shown if s.name == "input_ids")
    shown = [s.model_copy(update={"shape": list(ids.shape)}) if s.name == "attention_mask" else s for s in shown]
    outs = [s for s in outputs if s.name not in layout.present_outputs] or outputs[:1]
    seq = min(default_sequence, layout.context_length or default_sequence)
    dims: dict[str, int] = {}
    for s in shown + outs:
        for i, d in enumerate(s.shape):
            if isinstance(d, str):
                dims.setdefault(d, 1 if i == 0 else seq)
    return shown, outs, dims


def full_sequence_feeds(feeds: dict[str, np.ndarray], session_inputs: list[Any], head_size: int | None,
                        sliding_window: int | None = None) -> dict[str, np.ndarray]:
    """The caller's feeds plus what a KV-cache decoder also needs for one full pass (empty past, positions)."""
    ids = np.asarray(feeds["input_ids"])
    out = empty_past_feeds(session_inputs, ids, head_size, sliding_window)
    out.update({k: v for k, v in feeds.items() if k in out})
    return out


def pin_head_size(onnx_path: str | Path, head_size: int) -> bool:
    """Write the head size into the past/present dims the builder leaves symbolic (``kv_cache_dim``).

    Why: a step that rewrites the ONNX without its genai_config.json (dynamic INT8, say)
    keeps a file that still says how to feed its cache. Only the graph's declarations change
    (the weights file is untouched); returns whether anything changed.
    """
    import onnx

    from slimline.core.fsutil import atomic_path

    path = Path(onnx_path)
    model = onnx.load(str(path), load_external_data=False)
    changed = False
    for v in list(model.graph.input) + list(model.graph.output):
        if not v.name.startswith(PAST_PREFIXES + ("present",)):
            continue
        dims = v.type.tensor_type.shape.dim
        if len(dims) == 4 and not dims[3].dim_value:
            dims[3].Clear()
            dims[3].dim_value = int(head_size)
            changed = True
    if changed:
        with atomic_path(path) as tmp:
            onnx.save_model(model, str(tmp))
    return changed


def kv_view_meta(layout: KVCacheLayout, path: str | Path, outputs: list[Any]) -> dict[str, Any]:
    """Handle metadata of a KV-cache decoder: the layout, and what the task guess and random inputs need."""
    meta: dict[str, Any] = {"kv_cache": layout.model_dump()}
    folder = genai_folder_of(path)
    if folder is not None:
        try:
            cfg = json.loads((folder / GENAI_CONFIG).read_text(encoding="utf-8")).get("model", {})
        except (OSError, ValueError):
            cfg = {}
        if cfg.get("vocab_size"):
            meta["vocab_size"] = int(cfg["vocab_size"])
        if cfg.get("type"):
            meta["model_type"] = str(cfg["type"])
        meta["genai_folder"] = str(folder)
    logits = next((o for o in outputs if o.name == "logits"), None)
    if "vocab_size" not in meta and logits is not None and logits.shape and isinstance(logits.shape[-1], int):
        meta["vocab_size"] = int(logits.shape[-1])
    meta["task"] = "token_logits"
    return meta
