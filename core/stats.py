"""Layer inventory and weight statistics, fast enough for 100M-parameter models.

The inventory reads only tensor headers. Statistics stream each tensor in
cache-sized chunks (one read of the memory-mapped data, float32 arithmetic with
float64 accumulation of per-chunk results, Chan's merge for the variance), and
fall back to masked arithmetic only for chunks that contain NaN/Inf.
Results are cached per file identity so a histogram after the stats is instant.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from slimline.core.handle import ModelHandle

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from slimline.core.models.tensors import WeightSource

CHUNK = 1 << 18            # values per chunk: 1 MiB of float32, stays in L2
OUTLIER_SIGMA = 6.0
SAMPLE_SIZE = 1 << 18      # default size of a sampled histogram
BIG_TENSOR = 1_000_000     # above this, offer a sampled histogram first
_STATS_CACHE: dict[tuple, "LayerRow"] = {}
_STATS_LOCK = threading.Lock()


class LayerRow(BaseModel):
    """One weight tensor: identity (always) and statistics (after compute_stats)."""

    name: str
    layer: str = ""
    op_type: str = ""
    kind: str = "weight"   # weight | scalar | index: only weights count as parameters and get charts
    location: str = ""     # where the file keeps it ("Constant node X", "If node Y > then_branch > ...")
    value: str | None = None   # a scalar's value as text ("-inf", "1e-05"): JSON-safe for ±inf/NaN
    shape: list[int] = []
    dtype: str = ""
    params: int = 0
    bytes: int = 0
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    mean_abs: float | None = None
    sparsity: float | None = None
    outlier_frac: float | None = None
    nan_count: int | None = None
    inf_count: int | None = None


@dataclass
class Histogram:
    """Bin edges (len bins+1) and counts of the finite values; ``log``: bins over log10|w| of non-zeros."""

    edges: "np.ndarray"
    counts: "np.ndarray"
    sampled: bool
    n: int
    total: int = 0
    log: bool = False


_ITEMSIZE = {"float64": 8, "int64": 8, "uint64": 8, "float32": 4, "int32": 4, "uint32": 4, "float16": 2,
             "bfloat16": 2, "int16": 2, "uint16": 2, "int8": 1, "uint8": 1, "bool": 1, "float8_e4m3fn": 1,
             "float8_e5m2": 1, "int4": 0.5, "uint4": 0.5}


def _source(handle: ModelHandle) -> "WeightSource":
    from slimline.core.models.weights import weight_source

    return weight_source(handle)


def _array(src: "WeightSource", handle: ModelHandle, name: str) -> "np.ndarray":
    """A tensor's values; a declared shape that does not fit the stored bytes is a clear error."""
    from slimline.core.errors import ModelLoadError, SlimlineError

    try:
        return src.array(name)
    except SlimlineError:
        raise
    except (ValueError, TypeError, IndexError, OverflowError, MemoryError) as exc:
        try:
            shape: Any = src.entry(name).shape
        except KeyError:
            shape = "?"
        raise ModelLoadError(f"weight tensor {name!r} cannot be read: its declared shape {shape} does not match "
                             f"the stored data ({type(exc).__name__}: {str(exc)[:160]})", subject=handle.path,
                             hint="the file is corrupt or hand-edited; get it again or re-export the model") from None


def layer_inventory(handle: ModelHandle, *, include_constants: bool = False) -> list[LayerRow]:
    """Every weight tensor with its layer, op type, shape, dtype, params and bytes (no values read).

    Scalars (epsilons, ±inf Clip bounds) and integer shape/index tensors are not weights: they are
    left out unless ``include_constants``, so tables, totals and charts hold trained parameters only.
    """
    rows = []
    for e in _source(handle).entries:
        if e.kind != "weight" and not include_constants:
            continue
        n = e.numel
        rows.append(LayerRow(name=e.name, layer=e.layer, op_type=e.op_type, kind=e.kind, location=e.location,
                             shape=list(e.shape), dtype=e.dtype, params=n,
                             bytes=int(math.ceil(n * _ITEMSIZE.get(e.dtype, 4)))))
    return rows


def _scalar_text(arr: "np.ndarray") -> str | None:
    """A one-value tensor as text (``-inf``, ``nan``, ``1e-05``, ``3``); None for empty or unreadable ones."""
    import numpy as np

    a = np.asarray(arr).reshape(-1)
    if a.size != 1:
        return None
    v = a[0]
    if a.dtype.kind == "f":
        return f"{float(v):.6g}"
    if a.dtype.kind in "iub":
        return str(int(v))
    return None


def constant_inventory(handle: ModelHandle) -> list[LayerRow]:
    """The tensors that are not weights (scalars, shape/index tensors), with a scalar's value as text.

    Kept apart from the weight table so a -inf Clip bound or an int64 shape never reaches statistics,
    totals or charts, yet the user can still see what the file holds.
    """
    src = _source(handle)
    rows = []
    for r in layer_inventory(handle, include_constants=True):
        if r.kind == "weight":
            continue
        value = None
        if r.params == 1 and r.dtype not in ("str", "unknown"):
            try:
                value = _scalar_text(src.array(r.name))
            except Exception:  # noqa: BLE001 - a damaged constant must not stop the listing
                value = None
        rows.append(r.model_copy(update={"value": value}))
    return rows


# --------------------------------------------------------------------------- exact statistics

@dataclass
class _Acc:
    """Running moments over finite values, merged chunk by chunk (Chan et al.)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    abs_sum: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf
    zeros: int = 0
    nan: int = 0
    inf: int = 0

    def add(self, c: "np.ndarray", scratch: "np.ndarray") -> None:
        import numpy as np

        total = float(np.add.reduce(c, dtype=np.float64)) if c.dtype == np.float64 else float(c.sum(dtype=np.float32))
        if not math.isfinite(total):
            finite = np.isfinite(c)
            nf = int(finite.size - np.count_nonzero(finite))
            nans = int(np.count_nonzero(np.isnan(c)))
            self.nan += nans
            self.inf += nf - nans
            c = c[finite]
            if c.size == 0:
                return
            scratch = np.empty_like(c)
            total = float(c.sum(dtype=np.float64))
        k = c.size
        cm = total / k
        s = scratch[:k]
        np.subtract(c, c.dtype.type(cm), out=s)
        m2 = float(np.dot(s, s)) if s.dtype in (np.float32, np.float64) else float(np.square(s, dtype=np.float64).sum())
        np.abs(c, out=s)
        self.abs_sum += float(s.sum(dtype=np.float64 if c.dtype == np.float64 else np.float32))
        self.zeros += k - int(np.count_nonzero(c))
        self.lo = min(self.lo, float(c.min()))
        self.hi = max(self.hi, float(c.max()))
        n = self.n + k
        delta = cm - self.mean
        self.mean += delta * k / n
        self.m2 += m2 + delta * delta * self.n * k / n
        self.n = n


def _chunks(flat: "np.ndarray") -> Any:
    import numpy as np

    for i in range(0, flat.size, CHUNK):
        c = flat[i:i + CHUNK]
        if c.dtype not in (np.float32, np.float64):
            c = c.astype(np.float32)
        yield c


def _flat(arr: "np.ndarray") -> "np.ndarray":
    import numpy as np

    a = np.asarray(arr)
    if a.dtype == np.bool_:
        a = a.view(np.uint8)
    return a.reshape(-1) if a.flags.c_contiguous else np.ascontiguousarray(a).reshape(-1)


def tensor_stats(arr: "np.ndarray") -> dict[str, Any]:
    """Exact min/max/mean/std/mean_abs/sparsity/outlier_frac/nan/inf of one array (NaN/Inf safe)."""
    import numpy as np

    flat = _flat(arr)
    size = int(flat.size)
    if size == 0:
        return {"nan_count": 0, "inf_count": 0}
    acc = _Acc()
    scratch = np.empty(min(CHUNK, size), dtype=np.float64 if flat.dtype == np.float64 else np.float32)
    for c in _chunks(flat):
        acc.add(c, scratch)
    out: dict[str, Any] = {"nan_count": acc.nan, "inf_count": acc.inf}
    if acc.n == 0:
        return out
    std = math.sqrt(max(acc.m2 / acc.n, 0.0))
    outliers = 0
    if std > 0:
        lo_t, hi_t = acc.mean - OUTLIER_SIGMA * std, acc.mean + OUTLIER_SIGMA * std
        if acc.lo < lo_t or acc.hi > hi_t:   # skip the second pass when no value can be an outlier
            for c in _chunks(flat):
                outliers += int(np.count_nonzero(c > hi_t)) + int(np.count_nonzero(c < lo_t))
            outliers -= acc.inf   # ±Inf compare as beyond the thresholds; NaN compares false
    out.update(min=acc.lo, max=acc.hi, mean=acc.mean, std=std, mean_abs=acc.abs_sum / acc.n,
               sparsity=acc.zeros / size, outlier_frac=outliers / acc.n)
    return out


def _stats_key(handle: ModelHandle, name: str) -> tuple:
    from slimline.core.models.tensors import file_key

    files = tuple(file_key(f) for f in (handle.files or [handle.path]) if Path(f).is_file())
    return (handle.format, str(Path(handle.path).resolve()), files, name)


def compute_stats(handle: ModelHandle, names: list[str] | None = None,
                  progress: Callable[[float, str], None] | None = None) -> list[LayerRow]:
    """Rows with exact statistics: every weight tensor, or ``names`` (which may also name scalars/index tensors)."""
    src = _source(handle)
    rows = layer_inventory(handle, include_constants=names is not None)
    if names is not None:
        wanted = set(names)
        missing = wanted - {r.name for r in rows}
        if missing:
            from slimline.core.errors import SlimlineError

            raise SlimlineError(f"no weight tensor named {sorted(missing)[0]!r} in this model",
                                subject=handle.path, hint="pick a name from the layer table")
        rows = [r for r in rows if r.name in wanted]
    total = sum(max(r.params, 1) for r in rows) or 1
    done = 0
    out = []
    for r in rows:
        key = _stats_key(handle, r.name)
        with _STATS_LOCK:
            hit = _STATS_CACHE.get(key)
        if hit is None:
            values = tensor_stats(_array(src, handle, r.name)) if r.dtype not in ("str", "unknown") else {}
            hit = r.model_copy(update=values)
            with _STATS_LOCK:
                if len(_STATS_CACHE) > 100_000:
                    _STATS_CACHE.clear()
                _STATS_CACHE[key] = hit
        out.append(hit)
        done += max(r.params, 1)
        if progress is not None:
            progress(done / total, r.name)
    return out


# --------------------------------------------------------------------------- histograms

def _bincount_hist(chunks: Any, lo: float, hi: float, bins: int) -> tuple["np.ndarray", int]:
    import numpy as np

    counts = np.zeros(bins, dtype=np.int64)
    scale = bins / (hi - lo) if hi > lo else 0.0
    n = 0
    for c in chunks:
        if not np.isfinite(c.sum()):
            c = c[np.isfinite(c)]
        if c.size == 0:
            continue
        t = (c - c.dtype.type(lo)) * c.dtype.type(scale)
        idx = t.astype(np.intp)
        np.clip(idx, 0, bins - 1, out=idx)
        counts += np.bincount(idx, minlength=bins)
        n += c.size
    return counts, n


def _sample(flat: "np.ndarray", k: int, seed: int = 0) -> "np.ndarray":
    import numpy as np

    idx = np.sort(np.random.default_rng(seed).integers(0, flat.size, size=k))
    s = flat[idx]
    return s if s.dtype in (np.float32, np.float64) else s.astype(np.float32)


def histogram(handle: ModelHandle, name: str, *, bins: int = 64, sample: int | None = None,
              log: bool = False) -> Histogram:
    """Histogram of one tensor's finite values.

    ``sample``: when set and the tensor has more values, a uniform random sample of that
    size is binned (fast, ``sampled=True``); ``None`` gives the exact histogram.
    ``log``: bins over log10|w| of the non-zero values (shows magnitude spread).
    """
    import numpy as np

    from slimline.core.errors import SlimlineError

    if bins < 1:
        raise SlimlineError("bins must be at least 1", subject="bins", hint="use e.g. 64")
    src = _source(handle)
    try:
        src.entry(name)
    except KeyError:
        raise SlimlineError(f"no weight tensor named {name!r} in this model", subject=handle.path,
                            hint="pick a name from the layer table") from None
    flat = _flat(_array(src, handle, name))
    total = int(flat.size)
    sampled = sample is not None and 0 < sample < total
    data = _sample(flat, int(sample)) if sampled and sample is not None else flat

    def chunks() -> Any:
        for c in _chunks(data):
            if log:
                c = np.abs(c)
                c = np.log10(c[(c > 0) & np.isfinite(c)])
            yield c

    cached_stats = None
    if not sampled and not log:
        with _STATS_LOCK:
            cached_stats = _STATS_CACHE.get(_stats_key(handle, name))
    if cached_stats is not None and cached_stats.min is not None and cached_stats.max is not None:
        lo, hi = float(cached_stats.min), float(cached_stats.max)
    else:
        lo, hi = _finite_range(chunks())
    if not hi > lo:
        hi = lo + 1.0
    counts, n = _bincount_hist(chunks(), lo, hi, bins)
    edges = np.linspace(lo, hi, bins + 1)
    return Histogram(edges=edges, counts=counts, sampled=sampled, n=n, total=total, log=log)


def _finite_range(chunks: Any) -> tuple[float, float]:
    """Finite min/max in one streaming pass ((0, 1) when there are no finite values)."""
    import numpy as np

    lo, hi = math.inf, -math.inf
    for c in chunks:
        if not np.isfinite(c.sum()):
            c = c[np.isfinite(c)]
        if c.size:
            lo, hi = min(lo, float(c.min())), max(hi, float(c.max()))
    return (lo, hi) if lo <= hi else (0.0, 1.0)
