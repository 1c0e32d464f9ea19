"""Truncated SVD of a weight matrix, plain or data-aware, in numpy.

A weight W [m, n] (m outputs, n inputs) becomes B·A with A [r, n] and B [m, r]
(each gets √σ so neither factor dominates numerically). That saves parameters
only when r·(m+n) < m·n, i.e. r < m·n/(m+n): the break-even rank.

Data-aware SVD: plain SVD keeps the directions with the most *weight* energy, but
the error that matters is in the layer's *outputs*, ‖(W − Ŵ)·X‖ over real inputs X,
which depends on which input directions actually occur. Two options:
- "whiten" (default; the optimum of that output error, as in SVD-LLM): with the input
  second moment C = XᵀX/N = L·Lᵀ (Cholesky, damped by 1% of its mean diagonal so few
  calibration rows stay well-posed), truncate the SVD of W·L and map back:
  Ŵ = B·(A'·L⁻¹).
- "diag" (ASVD-style): scale input feature j by its RMS s_j, truncate the SVD of
  W·diag(s) and divide the scaling back out; cheaper, ignores input correlations.
Dead inputs get a floor so the division is safe.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RankRule:
    """How to pick r: a fixed rank, a kept-energy fraction, or a fraction of full rank."""

    kind: str          # "rank" | "energy" | "ratio"
    value: float

    def describe(self) -> str:
        return {"rank": f"rank {int(self.value)}", "energy": f"energy {self.value:g}",
                "ratio": f"{self.value:g}× full rank"}[self.kind]


@dataclass
class Factorization:
    rank: int
    full_rank: int
    energy_kept: float
    first: np.ndarray | None   # A [r, n]  (None when skipped)
    second: np.ndarray | None  # B [m, r]
    skip_reason: str = ""


def break_even_rank(m: int, n: int) -> float:
    return m * n / (m + n)


def choose_rank(sv: np.ndarray, rule: RankRule) -> int:
    full = len(sv)
    if rule.kind == "rank":
        return int(max(1, min(full, int(rule.value))))
    if rule.kind == "ratio":
        return int(max(1, min(full, round(rule.value * full))))
    energy = np.cumsum(sv.astype(np.float64) ** 2)
    total = energy[-1]
    if total <= 0:
        return 1
    r = int(np.searchsorted(energy / total, rule.value - 1e-12) + 1)
    return max(1, min(full, r))


def energy_kept(sv: np.ndarray, r: int) -> float:
    e = sv.astype(np.float64) ** 2
    return float(e[:r].sum() / e.sum()) if e.sum() > 0 else 1.0


def whitening(gram: np.ndarray, damp: float = 0.01) -> np.ndarray:
    """Lower-triangular L with L·Lᵀ = C + damp·mean(diag C)·I for an input second moment C."""
    c = np.asarray(gram, dtype=np.float64)
    c = (c + c.T) / 2
    eps = damp * max(float(np.mean(np.diag(c))), 1e-12)
    for _ in range(6):
        try:
            return np.linalg.cholesky(c + eps * np.eye(len(c)))
        except np.linalg.LinAlgError:
            eps *= 10
    raise np.linalg.LinAlgError("input second moment is not positive definite")


def factorize(w: np.ndarray, rule: RankRule, scale: np.ndarray | None = None,
              gram: np.ndarray | None = None) -> Factorization:
    """Factor ``w`` [m, n]; ``scale`` (len n, input RMS) or ``gram`` (n×n XᵀX/N) make it data-aware."""
    m, n = w.shape
    w64 = w.astype(np.float64)
    s = low = None
    if gram is not None:
        low = whitening(gram)
        w64 = w64 @ low
    elif scale is not None:
        s = np.asarray(scale, dtype=np.float64)
        floor = max(float(s.max()) * 1e-3, 1e-12)
        s = np.maximum(s, floor)
        w64 = w64 * s[None, :]
    u, sv, vt = np.linalg.svd(w64, full_matrices=False)
    full = len(sv)
    r = choose_rank(sv, rule)
    kept = energy_kept(sv, r)
    limit = break_even_rank(m, n)
    if r >= limit:
        return Factorization(r, full, kept, None, None,
                             f"rank {r} ≥ break-even {limit:.1f} (m·n/(m+n) for {m}×{n}): "
                             "factorizing would not save parameters")
    root = np.sqrt(sv[:r])
    first = root[:, None] * vt[:r]
    if low is not None:
        first = np.linalg.solve(low.T, first.T).T   # first · L⁻¹
    elif s is not None:
        first = first / s[None, :]
    second = u[:, :r] * root[None, :]
    return Factorization(r, full, kept, first.astype(w.dtype), second.astype(w.dtype))
