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


# --------------------------------------------------------------------------- per-task math
# Which of these judge a model is decided by its task (slimline.core.tasks); the math lives here.

# A dense map's error is measured against at least this share of its full scale, so an almost
# empty map (a probability map of a photo without text) is not judged by dividing by ~0.
MAP_FLOOR = 1e-2
# PSNR of identical maps (finite, so it survives JSON); float32 rounding alone stays far below it.
PSNR_IDENTICAL = 200.0


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def map_peak(ref: np.ndarray) -> float:
    """Full scale of a map: 1 for maps inside [0, 1] (probabilities, masks), else the largest |value|."""
    ref = _f64(ref)
    if not ref.size:
        return 1.0
    lo, hi = float(np.nanmin(ref)), float(np.nanmax(ref))
    if lo >= 0.0 and hi <= 1.0:
        return 1.0
    return max(abs(lo), abs(hi), ZERO_NORM)


def rel_l2_error(ref: np.ndarray, got: np.ndarray, floor: float = MAP_FLOOR) -> float:
    """‖got − ref‖ / ‖ref‖ over all rows, the denominator at least ``floor`` × full scale (RMS).

    Why over all rows, not per row: a row that is (almost) all zeros has no direction, so a
    per-row ratio or cosine there is noise; summed over the dataset the error is weighed
    against the signal that exists. ``inf`` when ``got`` has NaN/inf.
    """
    a, b = _f64(ref), _f64(got)
    if not a.size:
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        d = float(np.linalg.norm((b - a).ravel()))
    if not np.isfinite(d):
        return float("inf")
    denom = max(float(np.linalg.norm(a.ravel())), floor * map_peak(a) * float(np.sqrt(a.size)))
    return d / max(denom, ZERO_NORM)


def row_rel_l2(ref: np.ndarray, got: np.ndarray, floor: float = MAP_FLOOR) -> np.ndarray:
    """Per-row relative L2 with the same full-scale floor (for the worst row)."""
    ref = np.asarray(ref)
    n = int(ref.shape[0]) if ref.ndim else 1
    a, b = _rows(ref, n), _rows(got, n)
    if not a.size:
        return np.zeros(n)
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.linalg.norm(b - a, axis=1)
    denom = np.maximum(np.linalg.norm(a, axis=1), floor * map_peak(a) * np.sqrt(a.shape[1]))
    out = d / np.maximum(denom, ZERO_NORM)
    return np.where(np.isfinite(out), out, np.inf)


def psnr(ref: np.ndarray, got: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (peak = the map's full scale); PSNR_IDENTICAL for identical maps."""
    a, b = _f64(ref), _f64(got)
    if not a.size:
        return float("inf")
    with np.errstate(invalid="ignore", over="ignore"):
        mse = float(np.mean((b - a) ** 2))
    if not np.isfinite(mse):
        return 0.0
    if mse <= 0.0:
        return PSNR_IDENTICAL
    return float(min(10.0 * np.log10(map_peak(a) ** 2 / mse), PSNR_IDENTICAL))


def map_agreement(ref: np.ndarray, got: np.ndarray, threshold: float | None = None) -> float:
    """Share of map positions that get the same decision.

    N×C×H×W with C > 1: the same class (argmax over channels) per pixel. Otherwise both maps
    are cut at ``threshold`` (default 0.5 for maps inside [0, 1], else 0).
    """
    a, b = _f64(ref), _f64(got)
    if not a.size:
        return 1.0
    if threshold is None and a.ndim == 4 and a.shape[1] > 1:
        return float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))
    if threshold is None:
        threshold = 0.5 if map_peak(a) == 1.0 and float(np.nanmin(a)) >= 0.0 else 0.0
    return float(np.mean((a > threshold) == (b > threshold)))


def positives_iou(ref: np.ndarray, got: np.ndarray, threshold: float,
                  floor: float = MAP_FLOOR) -> tuple[float | None, int, int]:
    """(IoU, count in ref, count in got) of the cells whose score is above ``threshold``.

    Why: relative L2 is dominated by the large values (box coordinates, the bulk of a map), so a
    model can keep it small while every detection / text region is lost; the positives are what a
    user of the map acts on. Pooled over all rows. A cell whose |Δ| is within ``floor`` × full scale
    keeps the reference's decision, so rounding jitter at the threshold never counts as a change
    (a near-empty map with tiny noise stays equal). IoU is ``None`` when the reference has no
    positives: there is nothing to keep, and the caller judges by relative L2 alone.
    """
    a, b = _f64(ref), _f64(got)
    pa = a > threshold
    with np.errstate(invalid="ignore", over="ignore"):
        near = np.abs(b - a) <= floor * map_peak(a)
    pb = np.where(near, pa, b > threshold)
    n_ref, n_got = int(pa.sum()), int(pb.sum())
    if n_ref == 0:
        return None, 0, n_got
    union = int((pa | pb).sum())
    return float((pa & pb).sum() / union), n_ref, n_got


# A detection head has this many box rows (cx, cy, w, h / x1, y1, x2, y2) before its class scores.
BOX_ROWS = 4
# ... and many more anchors than rows (YOLOv8n at 320: 2100 anchors, 84 rows); a 3-D map is not this.
MIN_ANCHORS_PER_ROW = 4


def detection_axis(out: np.ndarray) -> int | None:
    """The feature axis (1 or 2) when ``out`` reads as a detection head [N, 4+C, A] / [N, A, 4+C], else None.

    C ≥ 1 class-score rows, A ≥ 4·(4+C) anchors, and the score rows are scores in [0, 1] (sigmoid):
    a threshold on them means "detected".
    """
    a = np.asarray(out)
    if a.ndim != 3 or a.dtype.kind not in "fc" or not a.size:
        return None
    for axis in (1, 2):
        f, anchors = a.shape[axis], a.shape[3 - axis]
        if f >= BOX_ROWS + 1 and anchors >= MIN_ANCHORS_PER_ROW * f:
            scores = np.take(a, np.arange(BOX_ROWS, f), axis=axis)
            lo, hi = float(np.nanmin(scores)), float(np.nanmax(scores))
            if lo >= 0.0 and hi <= 1.0:
                return axis
    return None


def split_detection(out: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(box rows, score rows) of a detection head along its feature axis."""
    a = np.asarray(out)
    f = a.shape[axis]
    return np.take(a, np.arange(BOX_ROWS), axis=axis), np.take(a, np.arange(BOX_ROWS, f), axis=axis)


def masked_mean_pool(hidden: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """[N, S, H] hidden states → [N, H] mean over the positions the attention mask keeps.

    This is how sentence-embedding models pool; padding positions are not part of the
    sentence and must not be averaged in. 2-D inputs are returned as they are.
    """
    h = _f64(hidden)
    if h.ndim <= 2:
        return h.reshape(h.shape[0], -1) if h.ndim == 2 else h.reshape(-1, 1)
    if h.ndim > 3:
        h = h.reshape(h.shape[0], h.shape[1], -1)
    if mask is None or np.asarray(mask).shape[:2] != h.shape[:2]:
        return h.mean(axis=1)
    m = _f64(mask)[..., None]
    return (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)


def nn_agreement(ref: np.ndarray, got: np.ndarray, max_rows: int = 2048) -> float:
    """Share of rows whose nearest other row (by cosine) is the same for both sets of vectors.

    What retrieval depends on: the neighbours, not the exact values. Needs ≥ 3 rows (1.0 below).
    """
    a, b = _f64(ref)[:max_rows], _f64(got)[:max_rows]
    n = a.shape[0]
    if n < 3:
        return 1.0

    def neighbours(x: np.ndarray) -> np.ndarray:
        x = x.reshape(n, -1)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), ZERO_NORM)
        sim = x @ x.T
        np.fill_diagonal(sim, -np.inf)
        return sim.argmax(axis=1)

    with np.errstate(invalid="ignore", over="ignore"):
        return float(np.mean(neighbours(a) == neighbours(b)))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = _f64(x)
    m = np.max(x, axis=-1, keepdims=True)
    z = x - np.where(np.isfinite(m), m, 0.0)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def kl_divergence(ref_logits: np.ndarray, got_logits: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean KL(p_ref ‖ p_got) in nats over the last axis (positions where ``mask`` is set)."""
    lp, lq = _log_softmax(ref_logits), _log_softmax(got_logits)
    with np.errstate(invalid="ignore", over="ignore"):
        kl = np.sum(np.exp(lp) * (lp - lq), axis=-1)
    if mask is not None:
        kl = kl[np.asarray(mask).astype(bool)]
    if not kl.size:
        return 0.0
    val = float(np.mean(kl))
    return max(val, 0.0) if np.isfinite(val) else float("inf")


def next_token_agreement(ref_logits: np.ndarray, got_logits: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Share of (kept) positions where both models predict the same next token."""
    same = _f64(ref_logits).argmax(axis=-1) == _f64(got_logits).argmax(axis=-1)
    if mask is not None:
        same = same[np.asarray(mask).astype(bool)]
    return float(np.mean(same)) if same.size else 1.0


def perplexity(logits: np.ndarray, token_ids: np.ndarray, mask: np.ndarray | None = None) -> float:
    """exp(mean negative log-likelihood) of each next token: logits at t predict token t+1.

    Positions whose target is padding (mask 0) are left out. ``inf`` when nothing is left.
    """
    lp = _log_softmax(np.asarray(logits)[:, :-1])
    ids = np.asarray(token_ids)[:, 1:].astype(np.int64)
    keep = np.ones(ids.shape, dtype=bool) if mask is None else np.asarray(mask)[:, 1:].astype(bool)
    keep &= (ids >= 0) & (ids < lp.shape[-1])
    if not keep.any():
        return float("inf")
    nll = -np.take_along_axis(lp, np.clip(ids, 0, lp.shape[-1] - 1)[..., None], axis=-1)[..., 0]
    val = float(np.mean(nll[keep]))
    return float(np.exp(val)) if np.isfinite(val) else float("inf")


def linear_output_error(weight: np.ndarray, changed: np.ndarray, gram: np.ndarray | None = None,
                        rms: np.ndarray | None = None) -> float:
    """Relative error a weight change makes at a linear layer's output, from its inputs' statistics.

    ``weight``/``changed`` are [out, in] (a conv kernel reshaped to [out, in·kh·kw]). With the input
    second moment ``gram`` = XᵀX/N the figure is exact for those inputs: sqrt(tr(ΔGΔᵀ) / tr(WGWᵀ));
    with per-input ``rms`` it assumes uncorrelated inputs; with neither it is the weight error ‖ΔW‖/‖W‖.
    Why here: it is the cheap stand-in for "the error at this layer's output" that sensitivity ranks by.
    """
    w, d = _f64(weight), _f64(weight) - _f64(changed)
    if gram is not None:
        g = _f64(gram)
        num, den = float(np.sum((d @ g) * d)), float(np.sum((w @ g) * w))
    else:
        s = np.ones(w.shape[1]) if rms is None else _f64(rms).reshape(-1)
        num, den = float(((d * s) ** 2).sum()), float(((w * s) ** 2).sum())
    if den <= ZERO_NORM:
        return 0.0 if num <= ZERO_NORM else float("inf")
    return float(np.sqrt(max(num, 0.0) / den))
