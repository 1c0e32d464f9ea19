"""An ONNX language model in one onnxruntime session: its signature, feeds with or without a past, scoring.

Two layouts are accepted. The onnxruntime-genai model builder's KV-cache model (``input_ids``,
``attention_mask``, ``past_key_values.*``): fed an empty past (sequence length 0) it returns every
position's logits, like a plain model. A plain export (``input_ids`` [, ``attention_mask``] →
``logits``), whose sequence length may be fixed by the export. The past's head count and head
size come from the graph, else from ``genai_config.json`` / ``config.json`` beside the model.

Why apart from :mod:`slimline.core.lm.runners`: those open a model *file* for the evaluator
(generation through the genai API, torch). This one also runs a model held in memory (a
quantized candidate being searched), feeds the past itself (sampling, decode timing) and scores
windows against a reference one at a time — what steps that rewrite an ONNX LM need. It belongs
to core/lm so no plugin carries its own LM runner.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from slimline.core.errors import StepFailed
from slimline.core.lm.genai import graph_sliding_window, sliding_past, sliding_window_of
from slimline.core.lm.score import WindowSummary, log_probs_of, summarize_window
from slimline.core.lm.text import TextWindows
from slimline.core.plugin import CancelToken

LMKind = Literal["kv_cache", "logits"]
_NP = {1: "float32", 10: "float16", 16: "bfloat16", 7: "int64", 6: "int32"}


@dataclass(frozen=True)
class PastInput:
    """One ``past_key_values.*`` input: its empty shape (batch 1, sequence 0) and the output that continues it."""

    name: str
    shape: tuple[int, ...]
    seq_axis: int
    dtype: str
    present: str | None


@dataclass(frozen=True)
class LMSignature:
    """How to feed the model and where its logits come out."""

    kind: LMKind
    input_ids: str
    ids_dtype: str
    attention_mask: str | None
    position_ids: str | None
    pasts: tuple[PastInput, ...]
    logits: str
    seq_len: int | None     # fixed by a plain export, else None
    vocab: int | None

    def describe(self) -> str:
        if self.kind == "kv_cache":
            return f"KV-cache LM ({len(self.pasts) // 2} layers' past fed empty)"
        fixed = f", sequence length fixed at {self.seq_len}" if self.seq_len else ""
        return f"logits-only LM ({self.input_ids}{', ' + self.attention_mask if self.attention_mask else ''}" \
               f" → {self.logits}{fixed})"


def _dims(value_info: Any) -> list[int | str]:
    out: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        out.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?"))
    return out


def _side_config(folder: Path) -> dict[str, int]:
    """Head count and head size from genai_config.json or config.json beside the model."""
    from slimline.core.lm.genai import GENAI_CONFIG

    found: dict[str, int] = {}
    genai = folder / GENAI_CONFIG
    if genai.is_file():
        try:
            dec = json.loads(genai.read_text(encoding="utf-8"))["model"]["decoder"]
            found["kv_heads"] = int(dec.get("num_key_value_heads") or dec["num_attention_heads"])
            found["head_size"] = int(dec["head_size"])
        except (KeyError, ValueError, TypeError, json.JSONDecodeError):
            pass
    cfg = folder / "config.json"
    if cfg.is_file() and not found:
        try:
            c = json.loads(cfg.read_text(encoding="utf-8"))
            heads = int(c["num_attention_heads"])
            found["kv_heads"] = int(c.get("num_key_value_heads") or heads)
            found["head_size"] = int(c.get("head_dim") or int(c["hidden_size"]) // heads)
        except (KeyError, ValueError, TypeError, json.JSONDecodeError):
            pass
    return found


def read_signature(model: Any, folder: Path, subject: str = "") -> LMSignature:
    """The LM layout of ``model`` (an onnx.ModelProto, weights not needed); StepFailed when it is not an LM."""
    subject = subject or str(folder)
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    names = [i.name for i in inputs]
    ids = next((i for i in inputs if i.name == "input_ids"), None)
    if ids is None:
        ints = [i for i in inputs if i.type.tensor_type.elem_type in (6, 7)]
        ids = ints[0] if len(ints) == 1 else None
    if ids is None:
        raise StepFailed(f"not a language model: no 'input_ids' input (inputs: {', '.join(names[:8])})",
                         subject=subject, hint="weight-only quantization takes a causal LM exported to ONNX "
                                               "(the genai model builder's folder or a logits export)")
    outputs = list(graph.output)
    logits = next((o for o in outputs if o.name == "logits"), None)
    if logits is None:
        rank3 = [o for o in outputs if len(_dims(o)) == 3]
        logits = rank3[0] if rank3 else None
    if logits is None:
        raise StepFailed(f"not a language model: no 'logits' output (outputs: "
                         f"{', '.join(o.name for o in outputs[:8])})", subject=subject,
                         hint="export the model so that it returns logits [batch, sequence, vocabulary]")
    ldims = _dims(logits)
    vocab = ldims[-1] if isinstance(ldims[-1], int) and ldims[-1] > 0 else None
    mask = next((i.name for i in inputs if i.name == "attention_mask"), None)
    pos = next((i.name for i in inputs if i.name == "position_ids"), None)
    past_in = [i for i in inputs if i.name.startswith(("past_key_values", "past_key", "past_value", "past."))]
    known = {ids.name, mask, pos} | {p.name for p in past_in}
    extra = [n for n in names if n not in known]
    if extra:
        raise StepFailed(f"the LM has inputs the step cannot feed: {', '.join(extra[:6])}", subject=subject,
                         hint="use a model with input_ids, attention_mask and past_key_values.* inputs only")
    side = _side_config(folder) if past_in else {}
    window = (graph_sliding_window(model) or sliding_window_of(folder)) if past_in else None
    pasts: list[PastInput] = []
    out_names = {o.name for o in outputs}
    for p in past_in:
        dims = _dims(p)
        if len(dims) != 4:
            raise StepFailed(f"past input {p.name} has rank {len(dims)}, expected 4 "
                             "[batch, kv heads, past sequence, head size]", subject=subject)
        seq_axis = next((k for k, d in enumerate(dims) if isinstance(d, str) and ("past" in d or "seq" in d)), 2)
        shape: list[int] = []
        for k, d in enumerate(dims):
            if k == 0:
                shape.append(1)
            elif k == seq_axis and sliding_past(d):  # a window-sized cache: zeros of that length, masked out
                if not window:
                    raise StepFailed(f"{p.name} is a sliding-window cache of unknown size", subject=subject,
                                     hint="keep genai_config.json beside the model")
                shape.append(window)
            elif k == seq_axis:
                shape.append(0)
            elif isinstance(d, int) and d > 0:
                shape.append(d)
            else:
                key = "kv_heads" if k == 1 else "head_size"
                if key not in side:
                    raise StepFailed(f"cannot tell the size of dim '{d}' of {p.name}", subject=subject,
                                     hint="keep genai_config.json (or config.json) beside the model")
                shape.append(side[key])
        present = p.name.replace("past_key_values", "present")
        pasts.append(PastInput(name=p.name, shape=tuple(shape), seq_axis=seq_axis,
                               dtype=_NP.get(p.type.tensor_type.elem_type, "float32"),
                               present=present if present in out_names else None))
    idims = _dims(ids)
    seq_len = idims[1] if len(idims) > 1 and isinstance(idims[1], int) and idims[1] > 0 else None
    return LMSignature(kind="kv_cache" if pasts else "logits", input_ids=ids.name,
                       ids_dtype=_NP.get(ids.type.tensor_type.elem_type, "int64"), attention_mask=mask,
                       position_ids=pos, pasts=tuple(pasts), logits=logits.name, seq_len=seq_len, vocab=vocab)


def lm_feeds(sig: LMSignature, ids: np.ndarray, past: dict[str, np.ndarray] | None = None, past_len: int = 0
             ) -> dict[str, np.ndarray]:
    """Inputs for ``ids`` [b, t]: a mask of ones, positions from ``past_len``, the past (empty when None)."""
    b, t = ids.shape
    feeds: dict[str, np.ndarray] = {sig.input_ids: np.asarray(ids).astype(sig.ids_dtype)}
    if sig.attention_mask:
        feeds[sig.attention_mask] = np.ones((b, past_len + t), dtype=sig.ids_dtype)
    if sig.position_ids:
        feeds[sig.position_ids] = np.broadcast_to(np.arange(past_len, past_len + t), (b, t)).astype(sig.ids_dtype)
    for p in sig.pasts:
        if past is not None:
            feeds[p.name] = past[p.name]
        else:
            shape = list(p.shape)
            shape[0] = b
            feeds[p.name] = np.zeros(shape, dtype=p.dtype)
    return feeds


@dataclass
class Scores:
    """One model on a set of windows: per-window summaries, and (vs a reference) log p of its top-k."""

    summaries: list[WindowSummary]
    logp_of_ref_top: list[np.ndarray]
    seconds: float


class OnnxLM:
    """One onnxruntime session over an ONNX LM, run one window (batch 1) at a time."""

    def __init__(self, model: str | Path | bytes, sig: LMSignature, *, threads: int | None = None,
                 external_data_dir: str | Path | None = None) -> None:
        from slimline.core.runtime import ort_inference_session, resolve_threads

        self.sig = sig
        self.threads = resolve_threads(threads)
        self.session = ort_inference_session(model, threads=self.threads, external_data_dir=external_data_dir)
        self._out_names = [o.name for o in self.session.get_outputs()]
        self._logits_at = self._out_names.index(sig.logits)

    def run(self, ids: np.ndarray, past: dict[str, np.ndarray] | None = None, past_len: int = 0
            ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits [b, t, V] for ``ids`` [b, t] and the presents to continue from (KV-cache models)."""
        outs = self.session.run(None, lm_feeds(self.sig, ids, past, past_len))
        presents: dict[str, np.ndarray] = {}
        for p in self.sig.pasts:
            if p.present is not None:
                presents[p.name] = outs[self._out_names.index(p.present)]
        return np.asarray(outs[self._logits_at]), presents

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """All positions' logits [T, V] of one window."""
        return self.run(np.asarray(ids, dtype=np.int64)[None, :])[0][0].astype(np.float32, copy=False)

    def score(self, windows: TextWindows, reference: list[WindowSummary] | None = None,
              cancel: CancelToken | None = None, progress: Any = None) -> Scores:
        """Summaries of every window (and log p of the reference's top-k tokens, for KL)."""
        t0 = time.perf_counter()
        sums: list[WindowSummary] = []
        ref_lp: list[np.ndarray] = []
        for i in range(windows.count):
            if cancel is not None:
                cancel.raise_if_cancelled()
            lg = self.logits(windows.ids[i])
            if not np.all(np.isfinite(lg)):
                lg = np.nan_to_num(lg, nan=np.nan, posinf=np.nan, neginf=np.nan)  # NaN makes the NLL NaN
            sums.append(summarize_window(lg, windows.ids[i], windows.scored[i]))
            if reference is not None:
                ref_lp.append(log_probs_of(lg, windows.scored[i], reference[i].top_ids))
            if progress is not None:
                progress((i + 1) / windows.count)
        return Scores(summaries=sums, logp_of_ref_top=ref_lp, seconds=time.perf_counter() - t0)

    def sample(self, n: int, length: int, first_token: int, seed: int = 0) -> np.ndarray:
        """``n`` sequences of ``length`` tokens sampled from the model (temperature 1), starting at ``first_token``.

        Used when no text is given: the model's own samples are text it finds likely, so a
        quantized copy that lost the model shows a perplexity jump on them as on real text.
        """
        rng = np.random.default_rng(seed)
        total = self.sig.seq_len or length
        seqs = np.full((n, total), first_token, dtype=np.int64)
        past: dict[str, np.ndarray] | None = None
        for t in range(1, total):
            if self.sig.kind == "kv_cache" and all(p.present for p in self.sig.pasts):
                step_ids = seqs[:, :t] if past is None else seqs[:, t - 1:t]
                logits, past = self.run(step_ids, past, 0 if past is None else t - 1)
                last = logits[:, -1, :]
            else:  # no cache: recompute the prefix (a fixed-length export is run padded with the first token)
                logits, _ = self.run(seqs)
                last = logits[:, t - 1, :]
            z = last.astype(np.float64)
            z -= z.max(axis=-1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=-1, keepdims=True)
            seqs[:, t] = [rng.choice(p.shape[-1], p=row) for row in p]
        return seqs

    def time_prefill(self, ids: np.ndarray, runs: int = 3) -> list[float]:
        """Seconds of each timed prefill of ``ids`` [T] (after one warm-up)."""
        x = np.asarray(ids, dtype=np.int64)[None, :]
        self.run(x)
        times = []
        for _ in range(max(runs, 1)):
            t0 = time.perf_counter()
            self.run(x)
            times.append(time.perf_counter() - t0)
        return times

    def time_decode(self, ids: np.ndarray, steps: int = 16) -> list[float] | None:
        """Seconds of each decoded token (the first, a warm-up, left out) after a prefill of ``ids``
        (KV-cache models), else None."""
        if self.sig.kind != "kv_cache" or not all(p.present for p in self.sig.pasts):
            return None
        x = np.asarray(ids, dtype=np.int64)[None, :]
        logits, past = self.run(x)
        n = x.shape[1]
        times = []
        for k in range(steps):
            nxt = np.array([[int(np.argmax(logits[0, -1]))]], dtype=np.int64)
            t0 = time.perf_counter()
            logits, past = self.run(nxt, past, n + k)
            times.append(time.perf_counter() - t0)
        return times[1:] if len(times) > 2 else times


def sampled_windows(runner: OnnxLM, *, count: int, length: int, first_token: int, seed: int,
                    source: str) -> TextWindows:
    """Windows of the model's own samples, scored like text windows (position 0 is context only)."""
    import hashlib

    ids = runner.sample(count, length, first_token, seed)
    scored = np.ones_like(ids, dtype=bool)
    scored[:, 0] = False
    return TextWindows(ids=ids, scored=scored, source=source, sha256=hashlib.sha256(ids.tobytes()).hexdigest(),
                       length=ids.shape[1] - 1, stride=ids.shape[1] - 1, bos_id=first_token,
                       stream_tokens=int(ids.size), tokenizer="(sampled token ids)")
