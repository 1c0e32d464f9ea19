"""Fidelity math: how closely one model's outputs follow another's, on the same rows.

One implementation for every caller (the evaluation after each step, export parity,
the quantize guardrail, the convert step's parity check), so "mean cosine 0.9993"
means the same thing wherever it is shown. Pure numpy: no model is run here.

Rules, and why:
- cosine is per row over the flattened row, in float64; two all-zero rows agree (1.0),
  one zero row against a non-zero one does not (0.0), and rounding never gives > 1;
- max abs error is ``inf`` when the compared output has NaN/inf, so a model that
  produces garbage can never look close;
- top-1 agreement compares the argmax over the last axis (class scores).
"""
from __future__ import annotations

import numpy as np

# Rows whose norm is below this are "zero" (float64 sums of float32 values).
ZERO_NORM = 1e-12


def _rows(arr: np.ndarray, n: int) -> np.ndarray:
    return np.asarray(arr, dtype=np.float64).reshape(n, -1)


def row_cosines(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row (first axis) of ``got`` with the same row of ``ref``."""
    ref = np.asarray(ref)
    n = int(ref.shape[0]) if ref.ndim else 1
    a, b = _rows(ref, n), _rows(got, n)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = np.einsum("ij,ij->i", a, b)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        cos = dot / (na * nb)
    cos = np.where((na <= ZERO_NORM) & (nb <= ZERO_NORM), 1.0, cos)
    cos = np.where(np.isfinite(cos), cos, 0.0)
    return np.clip(cos, -1.0, 1.0)


def max_abs_error(ref: np.ndarray, got: np.ndarray) -> float:
    """Largest absolute difference; ``inf`` when any difference is not finite (NaN/inf outputs)."""
    a = np.asarray(ref, dtype=np.float64)
    b = np.asarray(got, dtype=np.float64)
    if not a.size:
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a - b)
    if not np.all(np.isfinite(diff)):
        return float("inf")
    return float(diff.max())


def top1_agreement(ref: np.ndarray, got: np.ndarray) -> float:
    """Fraction of rows (or positions) where both outputs pick the same class (argmax, last axis)."""
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.ndim == 0 or ref.shape[-1] == 0:
        return 1.0
    return float(np.mean(ref.argmax(axis=-1) == got.argmax(axis=-1)))


def top1_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose argmax over the last axis equals the label (shapes must match)."""
    return float(np.mean(np.asarray(scores).argmax(axis=-1) == np.asarray(labels)))


def channel_rel_error(ref: np.ndarray, got: np.ndarray) -> float:
    """Mean over channels of ‖Δ‖/‖ref‖ per channel.

    Why per channel: one outlier channel dominates a whole-tensor norm, so a tensor whose
    small channels were rounded to zero would look fine; averaged per channel it does not.
    Channel axis: 1 for NCHW and [batch, features], last for [batch, seq, hidden].
    """
    if ref.ndim < 2:
        return float(np.linalg.norm(ref - got) / (np.linalg.norm(ref) + 1e-12))
    axis = ref.ndim - 1 if ref.ndim == 3 else 1
    r = np.moveaxis(ref, axis, 0).reshape(ref.shape[axis], -1)
    d = np.moveaxis(ref - got, axis, 0).reshape(ref.shape[axis], -1)
    nr = np.linalg.norm(r, axis=1)
    nd = np.linalg.norm(d, axis=1)
    live = nr > 1e-6 * (nr.max() + 1e-30)
    if not live.any():
        return float(nd.max() > 0)
    return float(np.mean(nd[live] / nr[live]))
