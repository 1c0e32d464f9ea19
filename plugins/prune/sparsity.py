"""Which weights to zero: pure numpy, shared by the torch and ONNX paths.

Scores are |w| (L1 magnitude) or seeded uniform noise (the random baseline).
Counts are exact: a 50% target zeroes exactly round(0.5·n) weights, ties broken by
position, so reported and real sparsity agree.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class WeightSlot:
    """One prunable weight tensor. ``in_axis`` is the input-feature axis (for N:M groups)."""

    name: str
    op: str
    array: np.ndarray
    in_axis: int = 1


@dataclass
class MaskResult:
    keep: dict[str, np.ndarray] = field(default_factory=dict)   # bool, True = keep
    skipped: dict[str, str] = field(default_factory=dict)       # name → reason
    threshold: dict[str, float] = field(default_factory=dict)   # name → magnitude cut (NaN if n/a)


def scores_for(slots: list[WeightSlot], criterion: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for s in slots:
        if criterion == "random":
            out[s.name] = rng.random(s.array.shape, dtype=np.float64).astype(np.float32)
        else:
            out[s.name] = np.abs(s.array.astype(np.float32, copy=False))
    return out


def _k_smallest_mask(score: np.ndarray, k: int) -> np.ndarray:
    """Keep-mask that drops exactly the k smallest scores."""
    flat = score.reshape(-1)
    keep = np.ones(flat.shape, dtype=bool)
    if k > 0:
        idx = np.argpartition(flat, k - 1)[:k]
        keep[idx] = False
    return keep.reshape(score.shape)


def unstructured_masks(slots: list[WeightSlot], *, sparsity: float, scope: str, criterion: str,
                       seed: int, threshold: float | None = None) -> MaskResult:
    """Per-layer or global target sparsity, or an absolute magnitude threshold."""
    res = MaskResult()
    scores = scores_for(slots, criterion, seed)
    if threshold is not None:
        for s in slots:
            res.keep[s.name] = scores[s.name] >= threshold
            res.threshold[s.name] = float(threshold)
        return res
    if scope == "layer":
        for s in slots:
            sc = scores[s.name]
            k = int(round(sparsity * sc.size))
            res.keep[s.name] = _k_smallest_mask(sc, k)
            res.threshold[s.name] = float(np.partition(sc.reshape(-1), k - 1)[k - 1]) if k > 0 else float("nan")
        return res
    # global: one cut over every eligible weight, ties resolved in layer order
    total = sum(scores[s.name].size for s in slots)
    k = int(round(sparsity * total))
    if k == 0:
        for s in slots:
            res.keep[s.name] = np.ones(s.array.shape, dtype=bool)
            res.threshold[s.name] = float("nan")
        return res
    allv = np.concatenate([scores[s.name].reshape(-1) for s in slots])
    cut = float(np.partition(allv, k - 1)[k - 1])
    del allv
    ties_left = k - sum(int((scores[s.name] < cut).sum()) for s in slots)
    for s in slots:
        sc = scores[s.name]
        keep = sc >= cut
        if ties_left > 0:
            tie_idx = np.flatnonzero(sc.reshape(-1) == cut)[:ties_left]
            flat = keep.reshape(-1)
            flat[tie_idx] = False
            keep = flat.reshape(sc.shape)
            ties_left -= len(tie_idx)
        keep[sc < cut] = False
        res.keep[s.name] = keep
        res.threshold[s.name] = cut
    return res


def nm_masks(slots: list[WeightSlot], *, n: int, m: int, criterion: str, seed: int,
             scores: dict[str, np.ndarray] | None = None) -> MaskResult:
    """N:M semi-structured: in every run of M consecutive input weights keep the N best.

    The input axis is moved last (conv weights [out, in, kh, kw] → [out, kh, kw, in], the
    layout sparse tensor cores expect), so groups run along input channels. ``scores``
    (same shapes as the weights) replaces the criterion, e.g. Wanda's |W|·‖X‖.
    """
    res = MaskResult()
    scores = scores if scores is not None else scores_for(slots, criterion, seed)
    for s in slots:
        sc = scores[s.name]
        n_in = sc.shape[s.in_axis]
        if n_in % m:
            res.skipped[s.name] = f"input dim {n_in} is not a multiple of {m}"
            continue
        moved = np.moveaxis(sc, s.in_axis, -1)
        groups = moved.reshape(-1, m)
        order = np.argsort(groups, axis=1, kind="stable")
        keep_g = np.ones(groups.shape, dtype=bool)
        np.put_along_axis(keep_g, order[:, : m - n], False, axis=1)
        keep = np.moveaxis(keep_g.reshape(moved.shape), -1, s.in_axis)
        res.keep[s.name] = keep
        res.threshold[s.name] = float("nan")
    return res


def row_masks(slots: list[WeightSlot], *, sparsity: float, scores: dict[str, np.ndarray]) -> MaskResult:
    """Per output row (axis 0), drop exactly round(sparsity·row length) lowest scores.

    Wanda compares weights within each output row rather than across the layer: rows
    differ in scale, and a layer-wide cut would empty some outputs while leaving others dense.
    """
    res = MaskResult()
    for s in slots:
        sc = scores[s.name].reshape(s.array.shape[0], -1)
        k = int(round(sparsity * sc.shape[1]))
        keep = np.ones(sc.shape, dtype=bool)
        if k > 0:
            idx = np.argpartition(sc, k - 1, axis=1)[:, :k]
            np.put_along_axis(keep, idx, False, axis=1)
        res.keep[s.name] = keep.reshape(s.array.shape)
        res.threshold[s.name] = float("nan")
    return res


def nm_valid(keep: np.ndarray, in_axis: int, n: int, m: int) -> bool:
    """True when every group of M input weights keeps at most N (used by tests and reports)."""
    moved = np.moveaxis(keep, in_axis, -1)
    if moved.shape[-1] % m:
        return False
    return bool((moved.reshape(-1, m).sum(axis=1) <= n).all())
