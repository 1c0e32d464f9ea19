"""Honest measurements: size, latency, accuracy, fidelity, environment.

Why each rule exists:
- size counts every file you would deploy (ONNX external data included) and a
  zlib-compressed figure, because unstructured sparsity only pays when compressed;
- latency times ``session.run`` alone after warm-up, reports percentiles and
  spread, and records threads/provider/device/versions so numbers can be compared;
- accuracy names the dataset and n; random inputs are labelled as such.
"""
from __future__ import annotations

import gc
import json
import os
import platform
import struct
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from slimline.core.data import Dataset, check_dataset, random_dataset
from slimline.core.errors import DataError, ModelLoadError
from slimline.core.fidelity import max_abs_error, row_cosines, top1_agreement
from slimline.core.handle import ModelHandle
from slimline.core.runtime import Session, cpu_name, open_session, predict

CHUNK = 1 << 20
_NON_PARAM_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


class SizeReport(BaseModel):
    bytes_on_disk: int
    zip_bytes: int | None = None
    # set when zip_bytes is an estimate from evenly spaced samples of a big file: the bytes compressed
    zip_sampled_bytes: int | None = Field(None, exclude_if=lambda v: v is None)
    param_count: int
    bytes_by_dtype: dict[str, int] = Field(default_factory=dict)
    files: list[str] = Field(default_factory=list)
    source: str = ""  # how params were counted ("onnx initializers", "safetensors header", "handle")


class AccuracyReport(BaseModel):
    dataset: str
    n: int
    top1: float


class FidelityReport(BaseModel):
    n: int
    mean_cosine: float
    min_cosine: float
    max_abs_error: float
    top1_agreement: float


# --------------------------------------------------------------------------- size

_ONNX_DTYPES = {1: ("float32", 4), 2: ("uint8", 1), 3: ("int8", 1), 4: ("uint16", 2), 5: ("int16", 2),
                6: ("int32", 4), 7: ("int64", 8), 9: ("bool", 1), 10: ("float16", 2), 11: ("float64", 8),
                12: ("uint32", 4), 13: ("uint64", 8), 16: ("bfloat16", 2), 17: ("float8e4m3fn", 1),
                18: ("float8e4m3fnuz", 1), 19: ("float8e5m2", 1), 20: ("float8e5m2fnuz", 1),
                21: ("uint4", 0.5), 22: ("int4", 0.5)}
_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
              "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
              "F8_E4M3": "float8e4m3fn", "F8_E5M2": "float8e5m2", "U16": "uint16", "U32": "uint32", "U64": "uint64"}


def _onnx_params(path: Path) -> tuple[int, dict[str, int], list[Path]]:
    """Param count, bytes by dtype and external data files from the ONNX graph (weights not loaded)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"cannot read the ONNX file ({exc})", subject=str(path)) from None
    folder = path.parent.resolve()
    params = 0
    by_dtype: dict[str, int] = {}
    externals: list[Path] = []

    from slimline.core.models.onnx_files import onnx_tensors

    def add(t: "onnx.TensorProto", is_weight: bool) -> None:
        nonlocal params
        n = int(np.prod(t.dims)) if len(t.dims) else 1
        params += n if is_weight else 0
        name, size = _ONNX_DTYPES.get(t.data_type, (f"onnx_type_{t.data_type}", 0))
        nbytes = int(np.ceil(n * size))
        if t.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in t.external_data}
            if "length" in info:
                nbytes = int(info["length"])
            loc = (folder / info.get("location", "")).resolve()
            if loc.is_relative_to(folder) and loc.is_file() and loc not in externals:
                externals.append(loc)
        by_dtype[name] = by_dtype.get(name, 0) + nbytes

    # Initializers, Constant nodes and If/Loop/Scan bodies: paddle2onnx and spox exports keep every
    # weight in Constant nodes. Params count weights only (not scalars or int64 shapes); bytes count all.
    for found in onnx_tensors(model):
        add(found.tensor, found.kind == "weight")
    return params, by_dtype, externals


def safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (dtype, shape, offsets per tensor), read without loading data."""
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ModelLoadError("not a safetensors file (too short)", subject=str(path))
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000:
            raise ModelLoadError("not a safetensors file (header too large)", subject=str(path))
        try:
            return json.loads(fh.read(n))
        except ValueError:
            raise ModelLoadError("not a safetensors file (bad header)", subject=str(path)) from None


def _safetensors_params(files: list[Path]) -> tuple[int, dict[str, int]]:
    params = 0
    by_dtype: dict[str, int] = {}
    for f in files:
        for name, info in safetensors_header(f).items():
            if name == "__metadata__":
                continue
            n = int(np.prod(info["shape"])) if info["shape"] else 1
            start, end = info["data_offsets"]
            dt = _ST_DTYPES.get(info["dtype"], info["dtype"].lower())
            by_dtype[dt] = by_dtype.get(dt, 0) + int(end - start)
            if not name.endswith(_NON_PARAM_SUFFIXES):
                params += n
    return params, by_dtype


def _model_files(handle: ModelHandle) -> list[Path]:
    files = [Path(f) for f in (handle.files or [handle.path])]
    out: list[Path] = []
    for f in files:
        if f.is_dir():
            out += sorted(p for p in f.rglob("*") if p.is_file())
        elif f.is_file():
            out.append(f)
    if not out:
        raise ModelLoadError("model file not found", subject=handle.path, hint="re-open the model")
    return list(dict.fromkeys(p.resolve() for p in out))


# zlib-6 runs at ~10 MB/s on weights: a 540 MB LLM took ~50 s of CPU for one figure. Files this big are
# estimated from evenly spaced 1 MiB samples instead (weights compress alike through a file), and say so.
ZIP_SAMPLE_ABOVE = 256 << 20
ZIP_SAMPLES = 32


def zip_size(files: Sequence[Path], level: int = 6) -> int:
    """Bytes after zlib (deflate, as in .zip) over all files, streamed in 1 MiB chunks."""
    return zip_estimate(files, level)[0]


def zip_estimate(files: Sequence[Path], level: int = 6,
                 sample_above: int | None = None) -> tuple[int, int | None]:
    """(zlib bytes, bytes compressed when that is an estimate else None).

    Files above ``sample_above`` are estimated from ``ZIP_SAMPLES`` evenly spaced 1 MiB chunks.
    """
    total, sampled = 0, 0
    estimated = False
    for f in files:
        size = Path(f).stat().st_size
        if sample_above is not None and size > sample_above:
            got, read = _zip_sampled(Path(f), size, level)
            total += int(round(got * size / max(read, 1)))
            sampled += read
            estimated = True
            continue
        comp = zlib.compressobj(level)
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                total += len(comp.compress(chunk))
        total += len(comp.flush())
        sampled += size
    return total, (sampled if estimated else None)


def _zip_sampled(path: Path, size: int, level: int) -> tuple[int, int]:
    got = read = 0
    with open(path, "rb") as fh:
        for k in range(ZIP_SAMPLES):
            fh.seek((size - CHUNK) * k // max(ZIP_SAMPLES - 1, 1))
            chunk = fh.read(CHUNK)
            got += len(zlib.compress(chunk, level))
            read += len(chunk)
    return got, read


def measure_size(handle: ModelHandle, *, compressed: bool = True) -> SizeReport:
    """Deployable bytes (external data included), zlib-6 bytes, params and bytes by dtype."""
    files = _model_files(handle)
    source = "handle"
    params: int = handle.param_count
    by_dtype: dict[str, int] = {}
    if handle.format == "onnx":
        onnx_path = Path(handle.path)
        params, by_dtype, externals = _onnx_params(onnx_path)
        files = list(dict.fromkeys([*files, *externals]))
        source = "onnx initializers"
    else:
        st = [f for f in files if f.suffix == ".safetensors"]
        if st:
            params, by_dtype = _safetensors_params(st)
            source = "safetensors header"
    zipped = zip_estimate(files, sample_above=ZIP_SAMPLE_ABOVE) if compressed else None
    return SizeReport(
        bytes_on_disk=sum(f.stat().st_size for f in files),
        zip_bytes=zipped[0] if zipped else None, zip_sampled_bytes=zipped[1] if zipped else None,
        param_count=int(params), bytes_by_dtype=by_dtype,
        files=[str(f) for f in files], source=source)


# --------------------------------------------------------------------------- latency
#
# A latency figure is only worth what its conditions were. Every report records
# when it was taken, the machine's load before and after, how many cores other
# processes kept busy during the timing and how much the samples scattered, and
# calls itself ``noisy`` when any of those says the figure cannot be trusted. A
# step is compared with its input model only by timing both in the same session,
# interleaved in blocks (A B, B A, …), so a neighbour that wakes up half-way hits
# both models alike; the ratio is the median of the per-block ratios with a
# bootstrap interval over blocks, and "slower" needs the whole interval above the
# floor.

SLOWER_FLOOR = 0.05         # a ratio within ±5 % is no change worth reporting, however tight the interval
NOISY_BLOCK_CV = 0.10       # block p50s of one model that scatter more than this: the machine changed mid-run
NOISY_SPREAD = 0.50         # (p90 - p50) / p50 above this: the samples themselves are unreliable
NOISY_OTHERS_CORES = 0.5    # other processes kept at least this many cores busy while we timed …
CLEAR_SLOWER_RATIO = 1.5    # … yet an interval entirely above this is a slowdown even on a noisy machine
CONFIDENCE = 0.90           # bootstrap interval of the ratio


class LatencyComparison(BaseModel):
    """A model timed against its input model in one session, interleaved block by block."""

    ratio: float                 # median over blocks of (this model's block p50 / input's block p50)
    low: float                   # bootstrap interval of that median over blocks
    high: float
    confidence: float = CONFIDENCE
    blocks: int
    runs_per_block: int
    input_p50_ms: float          # the input model's p50 in the same session (not a figure from earlier)
    block_ratios: list[float] = Field(default_factory=list)
    floor: float = SLOWER_FLOOR
    noisy: bool = False
    noise_reasons: list[str] = Field(default_factory=list)
    verdict: Literal["slower", "faster", "same", "inconclusive"] = "inconclusive"

    def describe(self) -> str:
        ratio = f"{self.ratio:.2f}" if self.ratio >= 0.1 else f"{self.ratio:.2g}"
        return (f"{ratio}× the input (p50 {self.input_p50_ms:.3f} ms in the same session; "
                f"{self.confidence * 100:.0f} % interval {self.low:.2f}–{self.high:.2f} over {self.blocks} "
                f"interleaved blocks)")


class LatencyReport(BaseModel):
    p50_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    spread: float  # (p90 - p50) / p50
    runs: int
    warmup: int
    threads: int
    provider: str
    device_name: str
    batch: int
    input_shapes: dict[str, list[int]]
    input_kind: Literal["dataset", "random"]
    dataset: str = ""
    versions: dict[str, str] = Field(default_factory=dict)
    # Process CPU time per run (p50). With threads=1 it equals wall time on an idle
    # machine; wall ≫ CPU means the process waited for a core (a busy machine).
    cpu_p50_ms: float | None = None
    load_avg: float | None = None  # 1-minute load average just before timing
    cores: int | None = None       # cores this process may use
    notes: list[str] = Field(default_factory=list)
    # Conditions (added in schema v2.1; absent in older run files, hence the defaults).
    measured_at: str | None = None        # local time the timing started
    load_avg_after: float | None = None   # 1-minute load average just after timing
    others_busy_cores: float | None = None  # cores other processes kept busy during the timing
    cv: float | None = None               # std / mean of the samples
    block_p50_ms: list[float] = Field(default_factory=list)  # p50 of each interleaved block
    noisy: bool = False
    noise_reasons: list[str] = Field(default_factory=list)
    source: str = "fresh"                 # "fresh", or "cached from <time>" when a figure is reused
    vs_input: LatencyComparison | None = None  # set when timed against the step's input model

    @model_serializer(mode="wrap")
    def _drop_unset_conditions(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Condition fields at their defaults are left out, so an older run file is written back unchanged."""
        out = handler(self)
        for key, default in _CONDITION_DEFAULTS.items():
            if key in out and out[key] == default:
                del out[key]
        return out


_CONDITION_DEFAULTS: dict[str, Any] = {"measured_at": None, "load_avg_after": None, "others_busy_cores": None,
                                       "cv": None, "block_p50_ms": [], "noisy": False, "noise_reasons": [],
                                       "source": "fresh", "vs_input": None}



def library_versions() -> dict[str, str]:
    """Versions without importing the libraries (importing torch alone takes seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"numpy": np.__version__}
    for dist in ("onnxruntime", "onnxruntime-gpu", "torch", "onnx", "transformers"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def _tile_rows(arr: np.ndarray, batch: int, axis: int | None = 0) -> np.ndarray:
    """``batch`` rows along ``axis`` (tiled when fewer); an unbatched input (axis None, a scalar) as is."""
    if axis is None or arr.ndim == 0:
        return arr
    arr = np.moveaxis(arr, axis, 0)
    if arr.shape[0] < batch:
        arr = np.concatenate([arr] * -(-batch // arr.shape[0]), axis=0)
    return np.ascontiguousarray(np.moveaxis(arr[:batch], 0, axis))


def latency_feeds(handle: ModelHandle, batch: int, dataset: Dataset | None,
                  seed: int = 0) -> tuple[dict[str, np.ndarray], Literal["dataset", "random"], str]:
    """Feeds for timing: the first ``batch`` dataset rows (tiled if fewer), else labelled random data."""
    if dataset is not None and dataset.kind == "real" and len(dataset):
        if handle.inputs:
            check_dataset(dataset, handle)
        axes = dataset.batch_axes
        return ({k: _tile_rows(v, batch, axes[k]) for k, v in dataset.inputs.items()}, "dataset",
                dataset.describe())
    ds = dataset if dataset is not None and len(dataset) else random_dataset(handle, batch, seed=seed)
    axes = ds.batch_axes
    return {k: _tile_rows(v, batch, axes[k]) for k, v in ds.inputs.items()}, "random", ds.describe()


def _timed_loop(session: Session, prepared: dict[str, np.ndarray], runs: int) -> tuple[np.ndarray, np.ndarray]:
    """(wall, process CPU) seconds for ``runs`` calls; GC paused so a collection does not land in one sample."""
    wall = np.empty(runs, dtype=np.float64)
    cpu = np.empty(runs, dtype=np.float64)
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(runs):
            c0 = time.process_time()
            t0 = time.perf_counter()
            session.run_prepared(prepared)
            wall[i] = time.perf_counter() - t0
            cpu[i] = time.process_time() - c0
    finally:
        if was_enabled:
            gc.enable()
    return wall, cpu


def time_session(session: Session, feeds: dict[str, np.ndarray], *, runs: int,
                 warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """(wall seconds, process CPU seconds) per ``session.run`` over ``runs`` calls after ``warmup``.

    Only the run call is inside the clocks; feeds are prepared before.
    """
    prepared = session.prepare(feeds)
    for _ in range(warmup):
        session.run_prepared(prepared)
    return _timed_loop(session, prepared, runs)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def _system_busy_s() -> float | None:
    """CPU seconds all processes have spent busy since boot (all cores), or None where unknown."""
    try:
        import psutil

        t = psutil.cpu_times()
        idle = t.idle + getattr(t, "iowait", 0.0)
        guest = getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)  # already inside user/nice
        return float(sum(t) - idle - guest)
    except Exception:  # psutil missing or /proc unreadable
        return None


MIN_PROBE_S = 0.2  # the kernel counts CPU time in 10 ms ticks: shorter windows say nothing about others


@dataclass
class TimingConditions:
    """What the machine was doing while one timing ran (see :class:`CpuWatch`)."""

    measured_at: str = ""
    load_before: float | None = None
    load_after: float | None = None
    others_busy_cores: float | None = None
    wall_s: float = 0.0


class CpuWatch:
    """Context manager: load before/after, and cores *other* processes kept busy meanwhile.

    Others' CPU = system-wide busy time minus this process's CPU time, over the
    wall time; it is measured, unlike the 1-minute load average, which lags a
    hog that started seconds ago by most of a minute.
    """

    def __enter__(self) -> CpuWatch:
        self.cond = TimingConditions(measured_at=time.strftime("%Y-%m-%dT%H:%M:%S"), load_before=load_average())
        self._sys0, self._proc0, self._t0 = _system_busy_s(), time.process_time(), time.perf_counter()
        return self

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def __exit__(self, *exc: object) -> None:
        wall = self.elapsed()
        sys1, proc1 = _system_busy_s(), time.process_time()
        self.cond.wall_s = wall
        self.cond.load_after = load_average()
        if self._sys0 is not None and sys1 is not None and wall >= MIN_PROBE_S:
            others = ((sys1 - self._sys0) - (proc1 - self._proc0)) / wall
            self.cond.others_busy_cores = round(max(0.0, others), 2)


def machine_noise(*, load_before: float | None, load_after: float | None, others_busy_cores: float | None,
                  cores: int, threads: int) -> list[str]:
    """Why the machine's state makes a timing untrustworthy (empty: it looked quiet)."""
    out: list[str] = []
    loads = [x for x in (load_before, load_after) if x is not None]
    if loads and max(loads) > cores:
        out.append(f"machine busy: load {max(loads):.1f} on {cores} cores")
    if (others_busy_cores is not None and others_busy_cores >= NOISY_OTHERS_CORES
            and others_busy_cores + min(threads, cores) > cores):
        out.append(f"other processes kept {others_busy_cores:.1f} of {cores} cores busy while timing "
                   f"({min(threads, cores)} threads needed)")
    return out


def sample_noise(ms: np.ndarray, block_p50_ms: Sequence[float]) -> list[str]:
    """Why the samples themselves are untrustworthy: wide spread, or blocks that disagree."""
    out: list[str] = []
    p50, p90 = (float(v) for v in np.percentile(ms, [50, 90]))
    if p50 > 0 and (p90 - p50) / p50 > NOISY_SPREAD:
        out.append(f"samples scatter: p90 is {(p90 - p50) / p50 * 100:.0f} % above p50")
    blocks = np.asarray(block_p50_ms, dtype=np.float64)
    if len(blocks) >= 2 and blocks.mean() > 0:
        cv = float(blocks.std() / blocks.mean())
        if cv > NOISY_BLOCK_CV:
            out.append(f"block medians disagree: CV {cv * 100:.0f} % over {len(blocks)} blocks")
    return out


def ratio_interval(input_blocks: Sequence[np.ndarray], blocks: Sequence[np.ndarray], *,
                   confidence: float = CONFIDENCE, resamples: int = 2000,
                   seed: int = 0) -> tuple[float, float, float, list[float]]:
    """(median ratio, low, high, per-block ratios) of block medians; bootstrap over blocks, seeded."""
    if len(input_blocks) != len(blocks) or not len(blocks):
        raise ValueError("need the same, non-zero number of blocks for both models")
    pa = np.array([np.median(b) for b in input_blocks], dtype=np.float64)
    pb = np.array([np.median(b) for b in blocks], dtype=np.float64)
    r = pb / np.where(pa > 0, pa, np.nan)
    r = r[np.isfinite(r)]
    if not len(r):
        return float("nan"), float("nan"), float("nan"), []
    ratio = float(np.median(r))
    if len(r) < 2:
        return ratio, float("-inf"), float("inf"), [float(x) for x in r]  # one block: no interval
    rng = np.random.default_rng(seed)
    meds = np.median(r[rng.integers(0, len(r), size=(resamples, len(r)))], axis=1)
    tail = (1 - confidence) / 2
    low, high = (float(v) for v in np.quantile(meds, [tail, 1 - tail]))
    return ratio, low, high, [float(x) for x in r]


def compare_blocks(input_blocks: Sequence[np.ndarray], blocks: Sequence[np.ndarray], *,
                   noise: Sequence[str] = (), floor: float = SLOWER_FLOOR,
                   confidence: float = CONFIDENCE) -> LatencyComparison:
    """Decide slower / faster / same from interleaved blocks, or say why no conclusion is possible.

    ``noise``: reasons already found (machine load, scattered samples). "slower"
    needs the interval's low end above 1 + floor, and on a noisy machine above
    CLEAR_SLOWER_RATIO: interleaving makes load hit both models alike, but a
    contended machine still stretches ratios of sub-millisecond runs.
    """
    ratio, low, high, per_block = ratio_interval(input_blocks, blocks, confidence=confidence)
    reasons = list(dict.fromkeys(noise))
    if len(per_block) < 2:
        reasons.append("fewer than two blocks: no interval")
    elif low < 1 - floor and high > 1 + floor:
        reasons.append(f"the ratio's interval {low:.2f}–{high:.2f} reaches past ±{floor * 100:.0f} % on both sides")
    noisy = bool(reasons)
    verdict: Literal["slower", "faster", "same", "inconclusive"] = "inconclusive"
    if low > 1 + floor and (not noisy or low > CLEAR_SLOWER_RATIO):
        verdict = "slower"
    elif high < 1 - floor and (not noisy or high < 1 / CLEAR_SLOWER_RATIO):
        verdict = "faster"
    elif not noisy and 1 - floor <= low and high <= 1 + floor:
        verdict = "same"
    input_p50 = float(np.median(np.concatenate([np.asarray(b) for b in input_blocks]))) * 1e3
    return LatencyComparison(ratio=ratio, low=low, high=high, confidence=confidence, blocks=len(blocks),
                             runs_per_block=int(len(blocks[0])) if len(blocks) else 0, input_p50_ms=input_p50,
                             block_ratios=per_block, floor=floor, noisy=noisy, noise_reasons=reasons,
                             verdict=verdict)


def latency_report(times_s: np.ndarray, *, session: Session, feeds: dict[str, np.ndarray], batch: int,
                   warmup: int, input_kind: Literal["dataset", "random"], dataset: str = "",
                   cpu_s: np.ndarray | None = None, load_avg: float | None = None,
                   blocks: Sequence[np.ndarray] | None = None,
                   conditions: TimingConditions | None = None) -> LatencyReport:
    """Percentiles plus the conditions they were taken under; ``noisy`` when those say "don't trust me"."""
    ms = times_s * 1e3
    p50, p90 = (float(v) for v in np.percentile(ms, [50, 90]))
    cores = usable_cores()
    if conditions is None:
        conditions = TimingConditions(measured_at=time.strftime("%Y-%m-%dT%H:%M:%S"), load_before=load_avg)
    load_before = conditions.load_before if load_avg is None else load_avg
    block_p50 = [float(np.median(b)) * 1e3 for b in blocks] if blocks else []
    noise = machine_noise(load_before=load_before, load_after=conditions.load_after,
                          others_busy_cores=conditions.others_busy_cores, cores=cores, threads=session.threads)
    noise += sample_noise(ms, block_p50)
    notes: list[str] = []
    if input_kind == "random":
        notes.append("random inputs: latency only, no accuracy")
    if load_before is not None and load_before > cores:
        notes.append(f"machine busy (load {load_before:.1f} on {cores} cores): timings are noisy; "
                     "re-measure on an idle machine before comparing")
    mean = float(ms.mean())
    return LatencyReport(
        p50_ms=p50, p90_ms=p90, mean_ms=mean, std_ms=float(ms.std()),
        min_ms=float(ms.min()), max_ms=float(ms.max()), spread=(p90 - p50) / p50 if p50 > 0 else 0.0,
        runs=int(len(ms)), warmup=warmup, threads=session.threads, provider=session.provider,
        device_name=session.device_name, batch=batch,
        input_shapes={k: [int(d) for d in v.shape] for k, v in feeds.items()},
        input_kind=input_kind, dataset=dataset, versions=library_versions(),
        cpu_p50_ms=float(np.percentile(cpu_s * 1e3, 50)) if cpu_s is not None else None,
        load_avg=load_before, cores=cores, notes=notes, measured_at=conditions.measured_at,
        load_avg_after=conditions.load_after, others_busy_cores=conditions.others_busy_cores,
        cv=float(ms.std() / mean) if mean > 0 else None, block_p50_ms=block_p50,
        noisy=bool(noise), noise_reasons=noise)


def _check_settings(batch: int, runs: int, warmup: int) -> None:
    if batch < 1 or runs < 1 or warmup < 0:
        raise DataError(f"need batch ≥ 1, runs ≥ 1, warmup ≥ 0 (got {batch}, {runs}, {warmup})",
                        subject="latency settings")


def _open(model: ModelHandle | Session, threads: int, device: str) -> tuple[Session, ModelHandle]:
    if isinstance(model, Session):
        session = model
        handle = session.handle or ModelHandle(path="", format="onnx", family="onnx", inputs=session.input_specs)
    else:
        handle = model
        session = open_session(model, device=device, threads=threads)
    if not handle.inputs:
        handle = handle.model_copy(update={"inputs": session.input_specs})
    return session, handle


def measure_latency(handle: ModelHandle | Session, *, batch: int = 1, runs: int = 50, warmup: int = 10,
                    threads: int = 0, device: str = "cpu", dataset: Dataset | None = None) -> LatencyReport:
    """Time ``session.run`` only: feeds are prepared first, then ``warmup`` + exactly ``runs`` calls.

    Uses the first ``batch`` rows of ``dataset`` (tiled if fewer); without one,
    random inputs, reported as ``input_kind="random"``. To compare two models use
    :func:`measure_interleaved`, never two separate calls of this.
    """
    _check_settings(batch, runs, warmup)
    session, model = _open(handle, threads, device)
    feeds, kind, ds_name = latency_feeds(model, batch, dataset)
    with CpuWatch() as watch:
        wall, cpu = time_session(session, feeds, runs=runs, warmup=warmup)
    chunks = np.array_split(wall, min(5, len(wall)))  # time-ordered: drift shows as disagreeing chunks
    return latency_report(wall, session=session, feeds=feeds, batch=batch, warmup=warmup, input_kind=kind,
                          dataset=ds_name, cpu_s=cpu, blocks=chunks, conditions=watch.cond)


DEFAULT_BLOCKS = 6
MIN_TIME_S = 0.3   # keep timing (more blocks) until this long, so the CPU probe can see other processes
MAX_BLOCKS = 40


def time_interleaved(sessions: Sequence[Session], feeds: Sequence[dict[str, np.ndarray]], *, runs: int,
                     warmup: int, blocks: int = DEFAULT_BLOCKS, min_time_s: float = MIN_TIME_S,
                     max_blocks: int = MAX_BLOCKS, cancel: object = None,
                     ) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]], TimingConditions]:
    """Per session, per block: (wall, CPU) seconds; sessions alternate A B, B A, … within one CPU watch.

    Each model gets ``ceil(runs / blocks)`` runs per block after one untimed run
    (its caches were just used by the other model); blocks are added past
    ``blocks`` until ``min_time_s`` has passed (at most ``max_blocks``).
    """
    prepared = [s.prepare(f) for s, f in zip(sessions, feeds)]
    for s, p in zip(sessions, prepared):
        for _ in range(warmup):
            s.run_prepared(p)
    per_block = max(1, -(-runs // max(1, blocks)))
    walls: list[list[np.ndarray]] = [[] for _ in sessions]
    cpus: list[list[np.ndarray]] = [[] for _ in sessions]
    with CpuWatch() as watch:
        k = 0
        while k < blocks or (watch.elapsed() < min_time_s and k < max_blocks):
            if cancel is not None:
                cancel.raise_if_cancelled()  # type: ignore[attr-defined]
            order = list(range(len(sessions)))
            for j in order if k % 2 == 0 else order[::-1]:
                sessions[j].run_prepared(prepared[j])
                w, c = _timed_loop(sessions[j], prepared[j], per_block)
                walls[j].append(w)
                cpus[j].append(c)
            k += 1
    return walls, cpus, watch.cond


def measure_interleaved(models: Sequence[ModelHandle | Session], *, batch: int = 1, runs: int = 50,
                        warmup: int = 10, threads: int = 0, device: str = "cpu", dataset: Dataset | None = None,
                        blocks: int = DEFAULT_BLOCKS, min_time_s: float = MIN_TIME_S, floor: float = SLOWER_FLOOR,
                        cancel: object = None) -> list[LatencyReport]:
    """Time one or more models in the same session, interleaved; each report records the conditions.

    With two or more, every later report carries ``vs_input``: its ratio to the
    first model with an interval, so a ratio never compares two machine states.
    """
    _check_settings(batch, runs, warmup)
    opened = [_open(m, threads, device) for m in models]
    feeds = [latency_feeds(h, batch, dataset) for _, h in opened]
    walls, cpus, cond = time_interleaved([s for s, _ in opened], [f[0] for f in feeds], runs=runs, warmup=warmup,
                                         blocks=blocks, min_time_s=min_time_s, cancel=cancel)
    reports = [latency_report(np.concatenate(w), session=s, feeds=f[0], batch=batch, warmup=warmup,
                              input_kind=f[1], dataset=f[2], cpu_s=np.concatenate(c), blocks=w, conditions=cond)
               for (s, _), f, w, c in zip(opened, feeds, walls, cpus)]
    for i in range(1, len(reports)):
        mine = reports[i].noise_reasons
        noise = mine + [f"input model: {r}" for r in reports[0].noise_reasons if r not in mine]
        cmp = compare_blocks(walls[0], walls[i], noise=noise, floor=floor)
        reports[i] = reports[i].model_copy(update={"vs_input": cmp, "noisy": cmp.noisy,
                                                   "noise_reasons": cmp.noise_reasons})
    return reports


# --------------------------------------------------------------------------- accuracy / fidelity


def top1_from_outputs(logits: np.ndarray, labels: np.ndarray, subject: str = "labels") -> float:
    """Fraction of rows whose argmax over the last axis equals the label (-100 ignored)."""
    pred = np.asarray(logits).argmax(axis=-1)
    labels = np.asarray(labels)
    if pred.shape != labels.shape:
        raise DataError(f"labels have shape {list(labels.shape)} but the model's predictions have "
                        f"{list(pred.shape)}", subject=subject,
                        hint="give one class id per sample (or per token for token models)")
    keep = labels != -100
    if not keep.any():
        raise DataError("no usable labels (all ignored)", subject=subject)
    return float((pred[keep] == labels[keep]).mean())


def accuracy(handle: ModelHandle | Session, dataset: Dataset, *, batch_size: int = 64,
             device: str = "cpu", threads: int = 0) -> AccuracyReport:
    """Top-1 of the first output against the dataset's labels."""
    if dataset.labels is None:
        raise DataError(f"{dataset.describe()} has no labels, so accuracy cannot be measured",
                        subject=dataset.source or dataset.name,
                        hint="add a 'labels' array, or compare with the source model (fidelity) instead")
    if dataset.kind == "random":
        raise DataError("accuracy on random inputs means nothing", subject=dataset.name,
                        hint="load a real, labelled dataset")
    outs = predict(handle, dataset, batch_size=batch_size, device=device, threads=threads)
    if not outs:
        raise DataError("the dataset is empty", subject=dataset.source or dataset.name)
    return AccuracyReport(dataset=dataset.name, n=len(dataset),
                          top1=top1_from_outputs(outs[0], dataset.labels, dataset.source or dataset.name))


def _first(x: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if not len(x):
        raise DataError("no outputs to compare", subject="fidelity")
    return np.asarray(x[0])


def fidelity(reference_outputs: Sequence[np.ndarray] | np.ndarray,
             outputs: Sequence[np.ndarray] | np.ndarray) -> FidelityReport:
    """How closely ``outputs`` follow ``reference_outputs`` (first output, per row; math in core.fidelity)."""
    ref = _first(reference_outputs).astype(np.float64)
    got = _first(outputs).astype(np.float64)
    if ref.shape != got.shape:
        raise DataError(f"outputs have shape {list(got.shape)}, reference has {list(ref.shape)}",
                        subject="fidelity", hint="compare outputs of the same dataset rows")
    n = int(ref.shape[0]) if ref.ndim else 1
    if n == 0:
        raise DataError("no rows to compare", subject="fidelity")
    cos = row_cosines(ref, got)
    return FidelityReport(n=n, mean_cosine=float(cos.mean()), min_cosine=float(cos.min()),
                          max_abs_error=max_abs_error(ref, got), top1_agreement=top1_agreement(ref, got))


# --------------------------------------------------------------------------- environment


def environment() -> dict:
    """Where numbers were measured: CPU, cores, OS, Python and library versions."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or restricted /proc
        physical = None
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "cpu": cpu_name(),
        "cores_logical": os.cpu_count(),
        "cores_physical": physical,
        "cores_usable": affinity,
        "python": sys.version.split()[0],
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "versions": library_versions(),
    }
