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
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel, Field

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
    param_count: int
    bytes_by_dtype: dict[str, int] = Field(default_factory=dict)
    files: list[str] = Field(default_factory=list)
    source: str = ""  # how params were counted ("onnx initializers", "safetensors header", "handle")


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


def zip_size(files: Sequence[Path], level: int = 6) -> int:
    """Bytes after zlib (deflate, as in .zip) over all files, streamed in 1 MiB chunks."""
    total = 0
    for f in files:
        comp = zlib.compressobj(level)
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                total += len(comp.compress(chunk))
        total += len(comp.flush())
    return total


def measure_size(handle: ModelHandle, *, compressed: bool = True) -> SizeReport:
    """Deployable bytes (external data included), zlib-6 bytes, params and bytes by dtype."""
    files = _model_files(handle)
    source = "handle"
    params, by_dtype = handle.param_count, {}
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
    return SizeReport(
        bytes_on_disk=sum(f.stat().st_size for f in files),
        zip_bytes=zip_size(files) if compressed else None,
        param_count=int(params), bytes_by_dtype=by_dtype,
        files=[str(f) for f in files], source=source)


# --------------------------------------------------------------------------- latency


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


def time_session(session: Session, feeds: dict[str, np.ndarray], *, runs: int,
                 warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """(wall seconds, process CPU seconds) per ``session.run`` over ``runs`` calls after ``warmup``.

    Only the run call is inside the clocks; feeds are prepared before. GC is
    paused during the timed loop so a collection does not land in one sample.
    """
    prepared = session.prepare(feeds)
    for _ in range(warmup):
        session.run_prepared(prepared)
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


def latency_report(times_s: np.ndarray, *, session: Session, feeds: dict[str, np.ndarray], batch: int,
                   warmup: int, input_kind: Literal["dataset", "random"], dataset: str = "",
                   cpu_s: np.ndarray | None = None, load_avg: float | None = None) -> LatencyReport:
    ms = times_s * 1e3
    p50, p90 = (float(v) for v in np.percentile(ms, [50, 90]))
    cores = usable_cores()
    notes: list[str] = []
    if input_kind == "random":
        notes.append("random inputs: latency only, no accuracy")
    if load_avg is not None and load_avg > cores:
        notes.append(f"machine busy (load {load_avg:.1f} on {cores} cores): timings are noisy; "
                     "re-measure on an idle machine before comparing")
    return LatencyReport(
        p50_ms=p50, p90_ms=p90, mean_ms=float(ms.mean()), std_ms=float(ms.std()),
        min_ms=float(ms.min()), max_ms=float(ms.max()), spread=(p90 - p50) / p50 if p50 > 0 else 0.0,
        runs=int(len(ms)), warmup=warmup, threads=session.threads, provider=session.provider,
        device_name=session.device_name, batch=batch,
        input_shapes={k: [int(d) for d in v.shape] for k, v in feeds.items()},
        input_kind=input_kind, dataset=dataset, versions=library_versions(),
        cpu_p50_ms=float(np.percentile(cpu_s * 1e3, 50)) if cpu_s is not None else None,
        load_avg=load_avg, cores=cores, notes=notes)


def measure_latency(handle: ModelHandle | Session, *, batch: int = 1, runs: int = 50, warmup: int = 10,
                    threads: int = 0, device: str = "cpu", dataset: Dataset | None = None) -> LatencyReport:
    """Time ``session.run`` only: feeds are prepared first, then ``warmup`` + ``runs`` calls.

    Uses the first ``batch`` rows of ``dataset`` (tiled if fewer); without one,
    random inputs, reported as ``input_kind="random"``.
    """
    if batch < 1 or runs < 1 or warmup < 0:
        raise DataError(f"need batch ≥ 1, runs ≥ 1, warmup ≥ 0 (got {batch}, {runs}, {warmup})",
                        subject="latency settings")
    if isinstance(handle, Session):
        session = handle
        model = session.handle or ModelHandle(path="", format="onnx", family="onnx", inputs=session.input_specs)
    else:
        model = handle
        session = open_session(handle, device=device, threads=threads)
    if not model.inputs:
        model = model.model_copy(update={"inputs": session.input_specs})
    feeds, kind, ds_name = latency_feeds(model, batch, dataset)
    load = load_average()
    wall, cpu = time_session(session, feeds, runs=runs, warmup=warmup)
    return latency_report(wall, session=session, feeds=feeds, batch=batch, warmup=warmup,
                          input_kind=kind, dataset=ds_name, cpu_s=cpu, load_avg=load)


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
