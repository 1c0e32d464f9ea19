"""Perplexity, next-token agreement and KL of a language model on text windows.

Each window's logits ``[T, V]`` are reduced at once to a :class:`WindowSummary` (negative
log-likelihood of each scored target, the argmax, the top-k log-probabilities), so a
model's whole evaluation is a few kB however big the vocabulary. Comparing two models
compares their summaries: KL(original ‖ step) is taken over the original's top-k tokens
plus one "rest" bucket — a lower bound of the full KL (merging outcomes never raises a
divergence), named as such wherever it is shown.

Perplexity = exp(mean NLL over scored tokens), as lm-eval's word-free ``token_perplexity``
and llama.cpp report it; its 95 % interval comes from a bootstrap over windows.
"""
from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from slimline.core.fidelity import _log_softmax

TOP_K = 32
BOOTSTRAP = 1000


class WindowSummary(BaseModel):
    """What is kept of one window's logits (positions are the scored targets, in order)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    nll: np.ndarray = Field(repr=False)         # [k] float64, -log p(target)
    argmax: np.ndarray = Field(repr=False)      # [k] int64, predicted next token
    top_ids: np.ndarray = Field(repr=False)     # [k, TOP_K] int64
    top_logp: np.ndarray = Field(repr=False)    # [k, TOP_K] float64
    target_ids: np.ndarray = Field(repr=False)  # [k] int64


def summarize_window(logits: np.ndarray, ids: np.ndarray, scored: np.ndarray, top_k: int = TOP_K) -> WindowSummary:
    """Reduce one window: ``logits [T, V]`` at t predict ``ids[t+1]``; keep targets where ``scored``."""
    logits = np.asarray(logits)
    ids = np.asarray(ids, dtype=np.int64)
    target_pos = np.nonzero(np.asarray(scored, dtype=bool))[0]
    target_pos = target_pos[target_pos >= 1]
    lp = _log_softmax(logits[target_pos - 1])                 # [k, V] float64
    targets = ids[target_pos]
    nll = -lp[np.arange(len(targets)), targets]
    k = min(top_k, lp.shape[-1])
    top = np.argpartition(-lp, k - 1, axis=-1)[:, :k]
    top_lp = np.take_along_axis(lp, top, axis=-1)
    order = np.argsort(-top_lp, axis=-1)
    top, top_lp = np.take_along_axis(top, order, axis=-1), np.take_along_axis(top_lp, order, axis=-1)
    return WindowSummary(nll=nll, argmax=top[:, 0].astype(np.int64), top_ids=top.astype(np.int64),
                         top_logp=top_lp, target_ids=targets)


def log_probs_of(logits: np.ndarray, scored: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
    """log p(token_ids[j]) at each scored target j — a step's probabilities of the original's top-k."""
    logits = np.asarray(logits)
    pos = np.nonzero(np.asarray(scored, dtype=bool))[0]
    pos = pos[pos >= 1]
    lp = _log_softmax(logits[pos - 1])
    return np.take_along_axis(lp, np.asarray(token_ids, dtype=np.int64), axis=-1)


class Perplexity(BaseModel):
    """Perplexity with its interval and the tokens it was computed on."""

    value: float
    low: float          # 95 % bootstrap interval over windows
    high: float
    nll: float          # mean negative log-likelihood (nats/token)
    tokens: int
    windows: int


def perplexity(summaries: list[WindowSummary], seed: int = 0) -> Perplexity:
    """exp(mean NLL) over all scored tokens, with a bootstrap over windows."""
    sums = np.array([s.nll.sum() for s in summaries], dtype=np.float64)
    counts = np.array([s.nll.size for s in summaries], dtype=np.float64)
    total = counts.sum()
    if total == 0:
        nan = float("nan")
        return Perplexity(value=nan, low=nan, high=nan, nll=nan, tokens=0, windows=len(summaries))
    mean = float(sums.sum() / total)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(sums), size=(BOOTSTRAP, len(sums)))
    boot = sums[idx].sum(axis=1) / np.maximum(counts[idx].sum(axis=1), 1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return Perplexity(value=float(np.exp(mean)), low=float(np.exp(lo)), high=float(np.exp(hi)), nll=mean,
                      tokens=int(total), windows=len(summaries))


class LMComparison(BaseModel):
    """A model's scores against the original's on the same windows."""

    perplexity: Perplexity
    original: Perplexity
    increase: float                 # perplexity / original - 1
    increase_low: float             # 95 % paired bootstrap interval of the increase
    increase_high: float
    agreement: float                # share of scored positions with the same argmax
    kl_topk: float                  # mean KL(original ‖ model) over original top-k + rest (lower bound), nats
    top_k: int = TOP_K


def kl_topk(ref: WindowSummary, got_logp_of_ref_top: np.ndarray) -> np.ndarray:
    """Per-position KL over the original's top-k tokens plus one bucket for the rest (a lower bound)."""
    p = np.exp(ref.top_logp)
    q_lp = np.asarray(got_logp_of_ref_top, dtype=np.float64)
    q = np.exp(q_lp)
    p_rest = np.clip(1.0 - p.sum(axis=-1), 1e-12, 1.0)
    q_rest = np.clip(1.0 - q.sum(axis=-1), 1e-12, 1.0)
    kl = np.sum(p * (ref.top_logp - q_lp), axis=-1) + p_rest * (np.log(p_rest) - np.log(q_rest))
    return np.maximum(kl, 0.0)


def compare(original: list[WindowSummary], model: list[WindowSummary], model_logp_of_original_top: list[np.ndarray],
            seed: int = 0) -> LMComparison:
    """Perplexity change (paired bootstrap over windows), argmax agreement and top-k KL."""
    if len(original) != len(model):
        raise ValueError(f"{len(model)} windows scored, the original has {len(original)}")
    p0, p1 = perplexity(original, seed), perplexity(model, seed)
    s0 = np.array([s.nll.sum() for s in original])
    s1 = np.array([s.nll.sum() for s in model])
    c = np.array([s.nll.size for s in original], dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(c), size=(BOOTSTRAP, len(c)))
    inc = np.exp((s1[idx].sum(1) - s0[idx].sum(1)) / np.maximum(c[idx].sum(1), 1)) - 1.0
    lo, hi = np.percentile(inc, [2.5, 97.5])
    same = np.concatenate([a.argmax == b.argmax for a, b in zip(original, model)]) if original else np.ones(0)
    kls = [kl_topk(a, q) for a, q in zip(original, model_logp_of_original_top)]
    kl = float(np.mean(np.concatenate(kls))) if kls and sum(k.size for k in kls) else 0.0
    return LMComparison(perplexity=p1, original=p0, increase=p1.value / p0.value - 1.0, increase_low=float(lo),
                        increase_high=float(hi), agreement=float(same.mean()) if same.size else 1.0, kl_topk=kl)
