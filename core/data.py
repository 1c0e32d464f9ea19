"""Datasets: named arrays keyed by model input, with optional labels.

Everything that measures accuracy, calibrates or trains gets its data from
here, so every figure can name its dataset and n. Loaders refuse to guess:
a file that does not fit the model raises :class:`DataError` naming the input
and what was expected. Random data exists only for latency and smoke checks
and says so (``kind="random"``).

Security: ``.npz``/``.npy`` files are read with ``allow_pickle=False``.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from slimline.core.errors import DataError
from slimline.core.handle import ModelHandle, TensorSpec

DatasetKind = Literal["real", "random"]
MAX_RANDOM_BYTES = 4 << 30  # random inputs bigger than this mean the declared dims are absurd
LABEL_KEYS = ("labels", "label")
IMAGE_EXTS = (".npy", ".pgm", ".ppm", ".pnm", ".png", ".jpg", ".jpeg", ".bmp")
TEXT_EXTS = (".txt", ".text")
CSV_EXTS = (".csv", ".tsv")

# ONNX / onnxruntime type names → numpy dtype names.
_DTYPE_ALIASES = {
    "float": "float32", "double": "float64", "half": "float16", "bool": "bool",
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(bool)": "bool", "tensor(int16)": "int16",
    "long": "int64", "int": "int32",
}


def np_dtype(name: str) -> np.dtype:
    """numpy dtype for a TensorSpec/onnxruntime dtype name (bfloat16 → float32 feeds)."""
    name = _DTYPE_ALIASES.get(str(name), str(name))
    if name in ("bfloat16", "tensor(bfloat16)"):
        return np.dtype(np.float32)
    try:
        return np.dtype(name)
    except TypeError:
        return np.dtype(np.float32)


@dataclass
class Dataset:
    """Rows of model inputs (first axis = sample) plus optional labels."""

    name: str
    source: str
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    kind: DatasetKind = "real"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise DataError("dataset has no input arrays", subject=self.source or self.name,
                            hint="give at least one array named after a model input")
        axes = self.batch_axes
        counts = {k: int(v.shape[ax]) for k, v in self.inputs.items() if (ax := axes[k]) is not None}
        if not counts:
            raise DataError(f"no array has a batch (row) dimension: {sorted(self.inputs)} are all unbatched",
                            subject=self.source or self.name,
                            hint="give at least one input with rows (first dimension = sample)")
        if self.labels is not None:
            counts["labels"] = int(self.labels.shape[0]) if self.labels.ndim else -1
        if len(set(counts.values())) != 1 or -1 in counts.values():
            raise DataError(f"arrays disagree on the number of rows: {counts}",
                            subject=self.source or self.name,
                            hint="every array (and the labels) needs the same first dimension")

    @property
    def batch_axes(self) -> dict[str, int | None]:
        """Which axis of each input holds the rows; None = fed whole to every batch (a scalar such as a
        sample rate). Defaults: axis 0, scalars unbatched; ``meta['batch_axes']`` overrides (state [2, B, H])."""
        given = self.meta.get("batch_axes") or {}
        return {k: (given[k] if k in given else (0 if v.ndim else None)) for k, v in self.inputs.items()}

    def __len__(self) -> int:
        axes = self.batch_axes
        for k, v in self.inputs.items():
            if (ax := axes[k]) is not None:
                return int(v.shape[ax])
        return 0

    def rows(self, idx: np.ndarray | slice) -> dict[str, np.ndarray]:
        """The inputs for rows ``idx`` (taken along each input's batch axis; unbatched inputs whole)."""
        axes = self.batch_axes
        out: dict[str, np.ndarray] = {}
        for k, v in self.inputs.items():
            ax = axes[k]
            out[k] = v if ax is None else v[(slice(None),) * ax + (idx,)]
        return out

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def batches(self, batch_size: int = 64) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        """Consecutive batches in order; the last one may be smaller."""
        if batch_size < 1:
            raise DataError(f"batch size must be ≥ 1, got {batch_size}", subject="batch_size")
        for start in range(0, len(self), batch_size):
            sl = slice(start, start + batch_size)
            yield (self.rows(sl),
                   None if self.labels is None else self.labels[sl])

    def _subset(self, idx: np.ndarray | slice, suffix: str) -> "Dataset":
        return Dataset(
            name=f"{self.name}{suffix}", source=self.source,
            inputs=self.rows(idx),
            labels=None if self.labels is None else self.labels[idx],
            kind=self.kind, meta=dict(self.meta))

    def take(self, n: int) -> "Dataset":
        """The first ``n`` rows (all when n ≥ len)."""
        n = max(0, min(int(n), len(self)))
        if n == len(self):
            return self
        return self._subset(slice(0, n), f"[:{n}]")

    def split(self, fraction: float, seed: int = 0) -> tuple["Dataset", "Dataset"]:
        """Deterministic shuffle-split: ``fraction`` of the rows in the first part."""
        if not 0.0 < fraction < 1.0:
            raise DataError(f"split fraction must be between 0 and 1, got {fraction}", subject="fraction")
        n = len(self)
        if n < 2:
            raise DataError(f"cannot split a dataset of {n} row(s)", subject=self.source or self.name,
                            hint="give a dataset with at least two samples")
        order = np.random.default_rng(seed).permutation(n)
        k = min(max(int(round(n * fraction)), 1), n - 1)
        a, b = np.sort(order[:k]), np.sort(order[k:])
        return self._subset(a, f"[split {fraction:g} a]"), self._subset(b, f"[split {fraction:g} b]")

    def describe(self) -> str:
        """One line for tables and logs, e.g. ``digits_eval.npz (n=449, labelled)``."""
        tag = "labelled" if self.labelled else "unlabelled"
        if self.kind == "random":
            tag = "RANDOM inputs, latency/smoke only"
        values = self.meta.get("values") or {}
        if values:
            tag += "; " + ", ".join(f"{k}={v}" for k, v in values.items())
        return f"{self.name} (n={len(self)}, {tag})"

    def __repr__(self) -> str:  # arrays are big: keep repr short
        shapes = {k: (tuple(v.shape), str(v.dtype)) for k, v in self.inputs.items()}
        return f"Dataset({self.describe()!r}, inputs={shapes})"


# --------------------------------------------------------------------------- checks


def _dims_match(expected: int | str, got: int) -> bool:
    return not isinstance(expected, int) or expected <= 0 or expected == got


def batch_axis(spec: TensorSpec | list[Any]) -> int | None:
    """Axis of ``spec`` (or a shape list) that holds the rows: None for a scalar (fed whole), a non-leading dim
    named like batch, the one dynamic dim behind a fixed leading dim of 2+ (recurrent state [layers, B, H]),
    else 0."""
    shape = list(spec.shape if isinstance(spec, TensorSpec) else spec)
    if not shape:
        return None
    for i, d in enumerate(shape):
        if isinstance(d, str) and "batch" in d.lower():
            return i
    dynamic = [i for i, d in enumerate(shape) if not (isinstance(d, int) and d > 0)]
    if isinstance(shape[0], int) and shape[0] >= 2 and len(dynamic) == 1:
        return dynamic[0]
    return 0


def fixed_batch(model: ModelHandle) -> int | None:
    """The batch size every call must use when the model fixes it (e.g. [1, 1, 64, W]), else None."""
    for spec in model.inputs:
        ax = batch_axis(spec)
        dim = spec.shape[ax] if ax is not None else None
        if isinstance(dim, int) and dim > 0:
            return dim
    return None


def _check_array(spec: TensorSpec, arr: np.ndarray, subject: str) -> np.ndarray:
    """Validate one input array against its spec; return it cast where allowed."""
    want = np_dtype(spec.dtype)
    bax = batch_axis(spec)
    exp_shape = ["batch" if i == bax else d for i, d in enumerate(spec.shape)]
    if spec.shape and arr.ndim != len(spec.shape):
        raise DataError(
            f"input '{spec.name}' expects shape {exp_shape} (rank {len(spec.shape)}), got {list(arr.shape)}",
            subject=subject, hint="reshape the data, or check that the dataset was made for this model")
    if not spec.shape and arr.ndim != 0:
        raise DataError(f"input '{spec.name}' is a single value (a scalar), got an array of shape {list(arr.shape)}",
                        subject=subject, hint=f"store '{spec.name}' as a 0-d array, e.g. np.array(16000)")
    for i, d in enumerate(spec.shape):
        if i == bax:
            continue
        if not _dims_match(d, int(arr.shape[i])):
            raise DataError(
                f"input '{spec.name}' expects shape {exp_shape}, got {list(arr.shape)} (dim {i}: {d} ≠ {arr.shape[i]})",
                subject=subject, hint="resize/reshape the data to the model's input shape")
    got = arr.dtype
    if got == want:
        return arr
    if want.kind == "f" and got.kind in "fiub":
        return arr.astype(want)  # float64→float32, uint8 images→float: lossless enough
    if want.kind in "iu" and got.kind in "iub":
        return arr.astype(want)
    if want.kind == "b" and got.kind in "iub":
        return arr.astype(want)
    raise DataError(
        f"input '{spec.name}' expects dtype {want}, got {got}",
        subject=subject, hint="integer inputs (token ids, indices) need integer data; convert the file")


def check_dataset(dataset: Dataset, model: ModelHandle) -> Dataset:
    """Raise DataError if ``dataset`` does not fit ``model``'s inputs; return it with dtypes cast.

    Dynamic dims match anything and the batch dim is free. float64→float32 and
    int→float are converted; float→int is refused (it would silently truncate).
    """
    subject = dataset.source or dataset.name
    for spec in model.inputs:
        if spec.name not in dataset.inputs:
            raise DataError(
                f"model input '{spec.name}' is missing; the dataset has {sorted(dataset.inputs)}",
                subject=subject,
                hint=f"name the array '{spec.name}' (model inputs: {[s.name for s in model.inputs]})")
        dataset.inputs[spec.name] = _check_array(spec, dataset.inputs[spec.name], subject)
    axes = {s.name: batch_axis(s) for s in model.inputs}
    if axes != {k: v for k, v in dataset.batch_axes.items() if k in axes}:
        dataset.meta["batch_axes"] = {**dataset.meta.get("batch_axes", {}), **axes}
        Dataset.__post_init__(dataset)  # the rows must agree along the model's batch axes too
    return dataset


# --------------------------------------------------------------------------- random


# Scalar inputs a model takes as a setting, not data: a random value would be wrong (a sample rate of 37).
SCALAR_DEFAULTS = {"sr": 16000, "sample_rate": 16000, "sampling_rate": 16000, "samplerate": 16000}
# Dynamic dims that name an audio length: 1 sample is never a useful input (a 16 kHz second is).
AUDIO_SAMPLES = 16000
AUDIO_DIMS = _AUDIO_DIMS = ("samples", "num_samples", "audio_length", "wav_length", "waveform")


def scalar_value(spec: TensorSpec, dims: dict[str, int]) -> tuple[int | float, str]:
    """(value, where it came from) for a 0-d input: ``dims[name]`` (``--dim sr=8000``), a known name, else 1."""
    if spec.name in dims:
        return dims[spec.name], "set by --dim"
    key = spec.name.lower().replace("-", "_")
    if key in SCALAR_DEFAULTS:
        return SCALAR_DEFAULTS[key], f"default for '{spec.name}'; change it with --dim {spec.name}=N"
    return 1, f"no default known; set it with --dim {spec.name}=N"


def random_dataset(model: ModelHandle, n: int, *, seed: int = 0,
                   batch_dims: dict[str, int] | None = None) -> Dataset:
    """``n`` rows of random inputs (kind="random"): for latency and smoke checks only.

    Dynamic dims take ``batch_dims`` overrides, then ``model.dim_defaults``, then 1 (an audio length
    named like ``samples`` left at 1 becomes 16000). Integer inputs get values in 0..min(vocab_size, 100)-1,
    masks get ones. Scalar (0-d) inputs are settings, fed whole to every batch: their value comes from the
    dims (``--dim sr=8000``) or a known default (a sample rate of 16000), and ``meta['values']`` says which.
    """
    if not model.inputs:
        raise DataError("the model declares no inputs, so random inputs cannot be made",
                        subject=model.path,
                        hint="give a dataset (--data file.npz with one array per input), or export the model "
                             "with its input signature (e.g. to ONNX)")
    rng = np.random.default_rng(seed)
    dims = {**model.dim_defaults, **(batch_dims or {})}
    for name in _AUDIO_DIMS:
        if dims.get(name, 1) == 1 and any(name == d for s in model.inputs for d in s.shape):
            dims[name] = AUDIO_SAMPLES
    high = int(min(int(model.meta.get("vocab_size", 100) or 100), 100))
    inputs: dict[str, np.ndarray] = {}
    axes: dict[str, int | None] = {}
    values: dict[str, str] = {}
    for spec in model.inputs:
        dt = np_dtype(spec.dtype)
        ax = axes[spec.name] = batch_axis(spec)
        if ax is None:
            val, why = scalar_value(spec, dims)
            inputs[spec.name] = np.asarray(val, dtype=dt)
            values[spec.name] = f"{val} ({why})"
            continue
        shape = spec.concrete_shape(dims)
        shape[ax] = n  # a fixed-batch model gets its rows in batches of its size (runtime.predict)
        numel = 1
        for d in shape:
            numel *= max(int(d), 0)
        if numel * dt.itemsize > MAX_RANDOM_BYTES:
            raise DataError(f"random inputs for '{spec.name}' would need shape {shape} "
                            f"({numel * dt.itemsize / 2**30:.1f} GiB); the model declares absurdly large dims",
                            subject=model.path or spec.name,
                            hint="set smaller values for the input's dims, or check the model file")
        if dt.kind == "f":
            arr = rng.standard_normal(shape).astype(dt)
        elif dt.kind == "b":
            arr = rng.integers(0, 2, size=shape).astype(bool)
        elif "mask" in spec.name.lower():
            arr = np.ones(shape, dtype=dt)
        elif "type_ids" in spec.name.lower():
            arr = np.zeros(shape, dtype=dt)
        else:
            arr = rng.integers(0, max(high, 1), size=shape).astype(dt)
        inputs[spec.name] = arr
    return Dataset(name=f"random(seed={seed})", source="", inputs=inputs, labels=None, kind="random",
                   meta={"dims": dims, "batch_axes": axes, "values": values})


# --------------------------------------------------------------------------- loaders


def load_dataset(path: str | Path, model: ModelHandle | None = None, **options: Any) -> Dataset:
    """Load a dataset file or folder, shaped for ``model`` when given.

    .npz/.npy arrays, .csv/.tsv tables, a folder with one subfolder per class of
    images, or a text file (one sample per line, tokenised with the model's tokenizer).
    """
    p = Path(path)
    if not p.exists():
        raise DataError("dataset not found", subject=str(p), hint="check the path")
    if p.is_dir():
        ds = _load_image_folder(p, model, **options)
    else:
        suffix = p.suffix.lower()
        if suffix == ".npz":
            ds = _load_npz(p, model, **options)
        elif suffix == ".npy":
            ds = _load_npy(p, model, **options)
        elif suffix in CSV_EXTS:
            ds = _load_csv(p, model, **options)
        elif suffix in TEXT_EXTS:
            ds = _load_text(p, model, **options)
        else:
            raise DataError(f"unknown dataset type '{suffix or p.name}'", subject=str(p),
                            hint="use .npz, .npy, .csv, .txt (one sample per line) or a folder of class subfolders")
    if model is not None and model.inputs:
        check_dataset(ds, model)
    return ds


def _labels_array(arr: np.ndarray, subject: str) -> np.ndarray:
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        return arr.astype(np.int64)
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        return arr  # regression targets: kept as floats
    raise DataError(f"labels have dtype {arr.dtype}; expected integer class ids", subject=subject,
                    hint="store labels as integers 0..classes-1")


def _assign_arrays(found: dict[str, np.ndarray], model: ModelHandle | None, subject: str) -> dict[str, np.ndarray]:
    """Map the file's arrays onto model inputs (one-input shortcut: any name)."""
    if model is None or not model.inputs:
        return found
    names = [s.name for s in model.inputs]
    if len(names) == 1 and names[0] not in found and len(found) == 1:
        return {names[0]: next(iter(found.values()))}
    missing = [n for n in names if n not in found]
    if missing:
        raise DataError(
            f"no array for model input '{missing[0]}'; the file has {sorted(found)}",
            subject=subject, hint=f"save the arrays under the model's input names {names} (labels as 'labels')")
    return {n: found[n] for n in names}


def _load_npz(p: Path, model: ModelHandle | None, *, label_key: str | None = None, **_: Any) -> Dataset:
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as exc:  # object arrays need pickle: refused
        raise DataError(f"cannot read arrays without unpickling ({exc})", subject=str(p),
                        hint="save plain numeric arrays (np.savez with numeric dtypes)") from None
    except Exception as exc:  # zip errors, truncated files
        raise DataError(f"not a readable .npz file ({exc})", subject=str(p),
                        hint="re-save it with numpy.savez") from None
    keys = (label_key,) if label_key else LABEL_KEYS
    labels = None
    for k in keys:
        if k in arrays:
            labels = _labels_array(arrays.pop(k), str(p))
            break
    if label_key and labels is None:
        raise DataError(f"no array named '{label_key}' for labels; found {sorted(arrays)}", subject=str(p))
    if not arrays:
        raise DataError("the file holds no input arrays", subject=str(p))
    inputs = _assign_arrays(arrays, model, str(p))
    axes = {sp.name: batch_axis(sp) for sp in model.inputs} if model is not None else {}
    return Dataset(name=p.name, source=str(p), inputs=inputs, labels=labels, meta={"batch_axes": axes})


def _load_npy(p: Path, model: ModelHandle | None, **_: Any) -> Dataset:
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"not a readable .npy array ({exc})", subject=str(p),
                        hint="save a plain numeric array with numpy.save") from None
    name = model.inputs[0].name if model is not None and len(model.inputs) == 1 else "input"
    if model is not None and len(model.inputs) > 1:
        raise DataError(f"a .npy file holds one array but the model has {len(model.inputs)} inputs",
                        subject=str(p), hint="use an .npz with one array per input")
    return Dataset(name=p.name, source=str(p), inputs={name: arr})


def _single_input(model: ModelHandle | None, what: str, subject: str) -> TensorSpec | None:
    if model is None or not model.inputs:
        return None
    if len(model.inputs) != 1:
        raise DataError(f"{what} give one input array, but the model has inputs "
                        f"{[s.name for s in model.inputs]}", subject=subject,
                        hint="use an .npz file with one array per input")
    return model.inputs[0]


def _row_shape(spec: TensorSpec, dims: dict[str, int]) -> list[int]:
    return spec.concrete_shape(dims, batch=1)[1:]


CSV_HINT = "a CSV dataset has one sample per row: numeric feature columns plus an optional 'label' column"


def _load_csv(p: Path, model: ModelHandle | None, *, label_column: str | int | None = None,
              delimiter: str | None = None, **_: Any) -> Dataset:
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"not a text CSV file ({exc.reason} at byte {exc.start})", subject=str(p),
                        hint="save the table as UTF-8 CSV text") from None
    if delimiter is None:
        delimiter = "\t" if p.suffix.lower() == ".tsv" else ","
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in r)]
    if not rows:
        raise DataError("the CSV file is empty", subject=str(p), hint=CSV_HINT)

    def numeric(cell: str) -> bool:
        try:
            float(cell)
            return True
        except ValueError:
            return False

    header = None if all(numeric(c) for c in rows[0]) else [c.strip() for c in rows[0]]
    body = rows[1:] if header else rows
    if not body:
        raise DataError("the CSV file has a header but no rows", subject=str(p), hint=CSV_HINT)
    width = len(body[0])
    for i, r in enumerate(body):
        if len(r) != width:
            raise DataError(f"row {i + 1 + bool(header)} has {len(r)} columns, expected {width}", subject=str(p),
                            hint=CSV_HINT)
    label_idx: int | None = None
    if label_column is not None:
        if isinstance(label_column, int):
            label_idx = label_column if label_column >= 0 else width + label_column
        elif header and label_column in header:
            label_idx = header.index(label_column)
        else:
            raise DataError(f"no column named '{label_column}'", subject=str(p),
                            hint=f"columns are {header}" if header else "the file has no header row")
    elif header and "label" in header:
        label_idx = header.index("label")
    try:
        data = np.array([[float(c) for c in r] for r in body], dtype=np.float64)
    except ValueError:
        for i, r in enumerate(body):
            for j, c in enumerate(r):
                if not numeric(c):
                    col = header[j] if header else j + 1
                    raise DataError(f"non-numeric value {c!r} in row {i + 1 + bool(header)}, column {col}",
                                    subject=str(p),
                                    hint="CSV datasets hold numbers only (plus a label column)") from None
        raise
    labels = None
    if label_idx is not None:
        labels = _labels_array(data[:, label_idx], str(p))
        data = np.delete(data, label_idx, axis=1)
    spec = _single_input(model, "CSV files", str(p))
    name = spec.name if spec else "input"
    if spec is not None:
        row = _row_shape(spec, model.dim_defaults)  # type: ignore[union-attr]
        if int(np.prod(row)) == data.shape[1]:
            data = data.reshape([data.shape[0], *row])
        elif len(spec.shape) != 2:
            raise DataError(
                f"{data.shape[1]} feature columns do not fill input '{spec.name}' of shape "
                f"{['batch', *spec.shape[1:]]} ({int(np.prod(row))} values per row)",
                subject=str(p), hint="check the columns, or set label_column to the label's name")
        dt = np_dtype(spec.dtype)
        if dt.kind in "iub" and np.all(data == np.round(data)):  # integer input: exact ints only
            data = data.astype(dt)
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    return Dataset(name=p.name, source=str(p), inputs={name: data}, labels=labels,
                   meta={"columns": header} if header else {})


# ----- images


def _read_netpbm(path: Path) -> np.ndarray:
    """P2/P3/P5/P6 netpbm image → uint8/uint16 array [H, W] or [H, W, 3]."""
    raw = path.read_bytes()
    tokens: list[bytes] = []
    pos = 0
    while len(tokens) < 4:
        while pos < len(raw) and raw[pos:pos + 1].isspace():
            pos += 1
        if raw[pos:pos + 1] == b"#":
            while pos < len(raw) and raw[pos:pos + 1] not in (b"\n", b"\r"):
                pos += 1
            continue
        start = pos
        while pos < len(raw) and not raw[pos:pos + 1].isspace() and raw[pos:pos + 1] != b"#":
            pos += 1
        if start == pos:
            raise DataError("truncated netpbm header", subject=str(path))
        tokens.append(raw[start:pos])
    magic = tokens[0]
    if magic not in (b"P2", b"P3", b"P5", b"P6"):
        raise DataError(f"unsupported netpbm type {magic!r}", subject=str(path), hint="use P2/P3/P5/P6 (PGM/PPM)")
    try:
        w, h, maxval = int(tokens[1]), int(tokens[2]), int(tokens[3])
    except ValueError:
        raise DataError("bad netpbm header", subject=str(path)) from None
    ch = 3 if magic in (b"P3", b"P6") else 1
    count = w * h * ch
    if magic in (b"P5", b"P6"):
        dt = np.dtype(np.uint8) if maxval < 256 else np.dtype(">u2")
        body = raw[pos + 1: pos + 1 + count * dt.itemsize]
        if len(body) != count * dt.itemsize:
            raise DataError("truncated image data", subject=str(path))
        arr = np.frombuffer(body, dtype=dt).astype(np.uint8 if maxval < 256 else np.uint16)
    else:
        vals = raw[pos:].split()
        if len(vals) < count:
            raise DataError("truncated image data", subject=str(path))
        arr = np.array([int(v) for v in vals[:count]], dtype=np.uint16 if maxval >= 256 else np.uint8)
    arr = arr.reshape((h, w, 3) if ch == 3 else (h, w))
    return arr.astype(np.float32) / float(maxval)


def _pil_available() -> bool:
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        return False
    return True


def _read_image(path: Path) -> np.ndarray:
    """Any supported image → float32 [H, W] or [H, W, C] (8/16-bit scaled to 0..1; .npy as stored)."""
    ext = path.suffix.lower()
    if ext == ".npy":
        arr = np.load(path, allow_pickle=False)
        if arr.dtype == np.uint8:
            return arr.astype(np.float32) / 255.0
        return arr.astype(np.float32)
    if ext in (".pgm", ".ppm", ".pnm"):
        return _read_netpbm(path)
    if not _pil_available():
        raise DataError(
            f"reading {ext} images needs the Pillow package, which is not installed",
            subject=str(path), hint="install Pillow, or convert the images to .npy or .pgm/.ppm")
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im if im.mode in ("L", "RGB", "I;16", "I") else im.convert("RGB"))
    except Exception as exc:
        raise DataError(f"cannot decode image ({exc})", subject=str(path),
                        hint="remove or replace the file; supported: PNG, JPEG, BMP, PGM/PPM, .npy") from None
    scale = 255.0 if arr.dtype == np.uint8 else 65535.0 if arr.dtype == np.uint16 else 1.0
    return arr.astype(np.float32) / scale


def resize_bilinear(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of [H, W] or [H, W, C] with half-pixel centres (numpy only)."""
    h, w = img.shape[:2]
    th, tw = size
    if (h, w) == (th, tw):
        return img

    def axis(n_src: int, n_dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.clip((np.arange(n_dst) + 0.5) * (n_src / n_dst) - 0.5, 0, n_src - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_src - 1)
        return lo, hi, (src - lo).astype(np.float32)

    rlo, rhi, rw = axis(h, th)
    clo, chi, cw = axis(w, tw)
    extra = (None,) * (img.ndim - 2)
    rows = img[rlo] * (1 - rw)[(slice(None), None, *extra)] + img[rhi] * rw[(slice(None), None, *extra)]
    return (rows[:, clo] * (1 - cw)[(None, slice(None), *extra)]
            + rows[:, chi] * cw[(None, slice(None), *extra)]).astype(np.float32)


def _image_layout(model: ModelHandle | None, size: Any, grayscale: bool | None,
                  layout: str | None) -> tuple[tuple[int, int] | None, bool | None, str]:
    """Target size/channels/layout from options, else from a 4-D model input."""
    spec = model.inputs[0] if model is not None and len(model.inputs) == 1 else None
    if spec is not None and len(spec.shape) == 4:
        s = spec.concrete_shape(model.dim_defaults, batch=1)  # type: ignore[union-attr]
        if layout is None:
            layout = "NHWC" if s[3] in (1, 3) and s[1] not in (1, 3) else "NCHW"
        h, w, c = (s[2], s[3], s[1]) if layout == "NCHW" else (s[1], s[2], s[3])
        if size is None and isinstance(spec.shape[2 if layout == "NCHW" else 1], int):
            size = (h, w)
        if grayscale is None and c in (1, 3):
            grayscale = c == 1
    hw = (int(size[0]), int(size[1])) if size is not None else None
    return hw, grayscale, (layout or "NCHW")


# Subfolder names that hold images but are not classes.
NOT_CLASS_NAMES = frozenset({
    "unlabeled", "unlabelled", "unlabel", "unknown", "unk", "none", "nolabel", "no_label", "test", "tests",
    "testing", "images", "image", "imgs", "img", "photos", "pictures", "pics", "data", "samples", "inputs",
    "input", "raw", "all", "misc", "other", "val", "valid", "validation", "train", "training", "eval"})


def _image_files(folder: Path) -> list[Path]:
    return [f for f in sorted(folder.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_EXTS]


def image_folder_labels(p: Path) -> tuple[list[tuple[Path, int]], list[str] | None, str]:
    """(files with class ids or -1, class names or None, why) for an image folder.

    Labelled only when the folder is unmistakably one subfolder per class: at least two
    subfolders holding images, none named like a bucket of unlabelled data (unlabeled,
    unknown, test, images, ...), and no loose images beside them. Anything else is read
    as unlabelled images — a wrong label is worse than none (it turns a detector's
    output into a fake "top-1").
    """
    subdirs = sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    loose = _image_files(p)
    with_images = [(d, _image_files(d)) for d in subdirs]
    with_images = [(d, fs) for d, fs in with_images if fs]
    generic = [d.name for d, _ in with_images if d.name.lower().replace("-", "_") in NOT_CLASS_NAMES]
    if len(with_images) >= 2 and not generic and not loose:
        classes = [d.name for d, _ in with_images]
        files = [(f, ci) for ci, (_, fs) in enumerate(with_images) for f in fs]
        return files, classes, f"{len(classes)} class subfolders"
    files = [(f, -1) for f in loose] + [(f, -1) for _, fs in with_images for f in fs]
    if loose and with_images:
        why = "images directly in the folder as well as in subfolders: read as unlabelled"
    elif loose:
        why = "a flat folder of images: unlabelled"
    elif generic:
        why = f"subfolder {generic[0]!r} is not a class name: unlabelled"
    else:
        why = "only one subfolder of images: unlabelled (classes need at least two)"
    return files, None, why


def _load_image_folder(p: Path, model: ModelHandle | None, *, size: Any = None, grayscale: bool | None = None,
                       mean: Any = None, std: Any = None, layout: str | None = None, **_: Any) -> Dataset:
    files, classes, why = image_folder_labels(p)
    if not files:
        raise DataError("the folder has no images", subject=str(p),
                        hint=f"put images ({', '.join(IMAGE_EXTS)}) in it; for labels, one subfolder per class "
                             "(e.g. cat/, dog/)")
    size, grayscale, layout = _image_layout(model, size, grayscale, layout)
    if layout not in ("NCHW", "NHWC"):
        raise DataError(f"layout must be NCHW or NHWC, got {layout!r}", subject="layout")
    images: list[np.ndarray] = []
    labels: list[int] = []
    skipped = sum(1 for d in [p, *(x for x in p.iterdir() if x.is_dir())] for f in d.iterdir()
                  if f.is_file() and f.suffix.lower() not in IMAGE_EXTS)
    for f, ci in files:
        img = _read_image(f)
        if img.ndim == 3 and img.shape[2] in (1, 3, 4) and f.suffix.lower() != ".npy":
            img = img[..., :3] if img.shape[2] == 4 else img
        elif img.ndim == 3 and img.shape[0] in (1, 3):  # .npy stored channels-first
            img = np.moveaxis(img, 0, -1)
        if img.ndim == 2:
            img = img[..., None]
        if img.ndim != 3:
            raise DataError(f"image has shape {list(img.shape)}; expected [H, W] or [H, W, C]", subject=str(f))
        if grayscale and img.shape[2] == 3:
            img = (img @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
        elif grayscale is False and img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        if size is not None:
            img = resize_bilinear(img, size)
        images.append(img)
        labels.append(ci)
    shapes = {im.shape for im in images}
    fallback = _default_image_size(model, layout)
    if len(shapes) > 1 and size is None and fallback is not None:
        images = [resize_bilinear(im, fallback) for im in images]
        shapes = {im.shape for im in images}
        resized = f"images of different sizes resized to {fallback[0]}x{fallback[1]} (the model's default dims)"
    else:
        resized = ""
    if len(shapes) > 1:
        raise DataError(f"images have different sizes {sorted(shapes)[:3]}", subject=str(p),
                        hint="pass size=(H, W) to resize them all")
    x = np.stack(images).astype(np.float32)  # N, H, W, C
    if mean is not None or std is not None:
        m = np.asarray(mean if mean is not None else 0.0, dtype=np.float32).reshape(-1)
        s = np.asarray(std if std is not None else 1.0, dtype=np.float32).reshape(-1)
        if np.any(s == 0):
            raise DataError("std must not be 0", subject="std")
        x = (x - m) / s
    if layout == "NCHW":
        x = np.ascontiguousarray(np.moveaxis(x, -1, 1))
    name = model.inputs[0].name if model is not None and len(model.inputs) == 1 else "input"
    return Dataset(name=p.name, source=str(p), inputs={name: x},
                   labels=np.asarray(labels, dtype=np.int64) if classes is not None else None,
                   meta={"classes": classes, "skipped_files": skipped, "labels": why,
                         **({"resized": resized} if resized else {})})


def _default_image_size(model: ModelHandle | None, layout: str) -> tuple[int, int] | None:
    """(H, W) from a 4-D input's dims and dim defaults, for photos of mixed sizes fed to a dynamic-size model."""
    if model is None or len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        return None
    s = model.inputs[0].concrete_shape(model.dim_defaults, batch=1)
    h, w = (s[2], s[3]) if layout == "NCHW" else (s[1], s[2])
    return (int(h), int(w)) if h > 1 and w > 1 else None


# ----- text


def _tokenizer_dir(model: ModelHandle, override: Any) -> Path:
    if override is not None:
        return Path(override)
    mp = Path(model.path)
    return mp if mp.is_dir() else mp.parent


def _load_text(p: Path, model: ModelHandle | None, *, tokenizer: Any = None, max_length: int | None = None,
               label_separator: str | None = None, **_: Any) -> Dataset:
    lines = [ln.rstrip("\r\n") for ln in p.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise DataError("the text file has no non-empty lines", subject=str(p))
    labels = None
    if label_separator is not None:
        lab, texts = [], []
        for i, ln in enumerate(lines):
            head, sep, tail = ln.partition(label_separator)
            try:
                lab.append(int(head))
            except ValueError:
                raise DataError(f"line {i + 1} does not start with an integer label and {label_separator!r}",
                                subject=str(p)) from None
            texts.append(tail)
        lines, labels = texts, np.asarray(lab, dtype=np.int64)
    if model is None:
        raise DataError("a text dataset needs the model, to tokenise with its tokenizer", subject=str(p),
                        hint="open the model first, then load the text file for it")
    tok_dir = _tokenizer_dir(model, tokenizer)
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise DataError("text datasets need the 'transformers' package", subject=str(p),
                        hint="pip install 'slimline[hf]'") from None
    try:
        tok = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    except Exception as exc:
        raise DataError(f"no usable tokenizer in {tok_dir} ({type(exc).__name__})", subject=str(p),
                        hint="put the tokenizer files (tokenizer.json / tokenizer_config.json) beside the model, "
                             "or pass tokenizer=<folder>") from None
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise DataError("the tokenizer has no padding token", subject=str(tok_dir),
                            hint="set pad_token in tokenizer_config.json")
        tok.pad_token = tok.eos_token
    specs = {s.name: s for s in model.inputs}
    if max_length is None:
        seq_dims = [s.shape[1] for s in model.inputs if len(s.shape) >= 2]
        for d in seq_dims:
            if isinstance(d, int) and d > 0:
                max_length = d
                break
            if isinstance(d, str) and d in model.dim_defaults and model.dim_defaults[d] > 1:
                max_length = int(model.dim_defaults[d])
                break
    if max_length is None:
        max_length = int(getattr(tok, "model_max_length", 0) or 0)
        if not 0 < max_length <= 4096:
            raise DataError("cannot tell the sequence length for this model", subject=str(p),
                            hint="set the model's sequence dim (dim_defaults) or pass max_length")
    enc = tok(lines, padding="max_length", truncation=True, max_length=int(max_length), return_tensors="np")
    inputs: dict[str, np.ndarray] = {}
    for name, spec in specs.items():
        if name in enc:
            inputs[name] = np.asarray(enc[name]).astype(np_dtype(spec.dtype))
        elif "token_type" in name:
            inputs[name] = np.zeros_like(np.asarray(enc["input_ids"]), dtype=np_dtype(spec.dtype))
        else:
            raise DataError(f"the tokenizer gives {sorted(enc.keys())} but the model also needs '{name}'",
                            subject=str(p), hint="use the tokenizer that belongs to this model")
    return Dataset(name=p.name, source=str(p), inputs=inputs, labels=labels,
                   meta={"max_length": int(max_length), "tokenizer": str(tok_dir)})


# --------------------------------------------------------------------------- bundle


@dataclass
class DataBundle:
    """What steps get in ``ctx.data``: evaluation, calibration and training data."""

    eval: Dataset | None = None
    calibration: Dataset | None = None
    train: Dataset | None = None
    notes: list[str] = field(default_factory=list)
    # Language models on a text file (slimline.core.lm.evaluate.text_bundle): the token windows
    # (slimline.core.lm.text.TextWindows) of the evaluation and training texts; eval/train/calibration
    # then hold the same windows as input_ids/attention_mask rows.
    text: Any = None
    train_text: Any = None

    CALIBRATION_ROWS = 128
    EVAL_FRACTION = 0.2

    @classmethod
    def from_dataset(cls, ds: Dataset, *, seed: int = 0) -> "DataBundle":
        """Derive all three from one dataset without scoring on training rows.

        Real data with ≥ 10 rows: a deterministic 20 % hold-out for eval, the rest
        for training, calibration = first 128 training rows. Smaller data is used
        for everything (noted). Random data never serves as eval.
        """
        notes: list[str] = []
        if ds.kind == "random":
            notes.append(f"{ds.describe()}: random inputs used for calibration only; no accuracy possible")
            return cls(eval=None, calibration=ds.take(cls.CALIBRATION_ROWS), train=None, notes=notes)
        if len(ds) >= 10:
            ev, tr = ds.split(cls.EVAL_FRACTION, seed)
            notes.append(f"one dataset given: {len(ev)} rows held out for evaluation, "
                         f"{len(tr)} for training/calibration (seed {seed})")
        else:
            ev = tr = ds
            notes.append(f"only {len(ds)} rows: the same rows serve evaluation, calibration and training")
        return cls(eval=ev, calibration=tr.take(cls.CALIBRATION_ROWS), train=tr, notes=notes)

    @classmethod
    def from_paths(cls, eval: str | Path | None = None, train: str | Path | None = None,
                   calibration: str | Path | None = None, model: ModelHandle | None = None,
                   **options: Any) -> "DataBundle":
        """Load the given files; derive the missing roles from what was given."""
        ev = load_dataset(eval, model, **options) if eval else None
        tr = load_dataset(train, model, **options) if train else None
        cal = load_dataset(calibration, model, **options) if calibration else None
        if ev is None and tr is None:
            if cal is None:
                return cls(notes=["no dataset given"])
            return cls(calibration=cal, notes=["only calibration data given: no accuracy, no training data"])
        if ev is not None and tr is not None:
            return cls(eval=ev, train=tr, calibration=cal or tr.take(cls.CALIBRATION_ROWS),
                       notes=[] if cal else [f"calibration: first {min(len(tr), cls.CALIBRATION_ROWS)} training rows"])
        if ev is not None:  # score on the whole eval file the user chose; never train on it
            return cls(eval=ev, train=None, calibration=cal or ev.take(cls.CALIBRATION_ROWS), notes=[
                "no training data given: steps that fine-tune or distill need train=",
                *([] if cal else [f"calibration: first {min(len(ev), cls.CALIBRATION_ROWS)} eval rows"])])
        bundle = cls.from_dataset(tr)  # type: ignore[arg-type]
        if cal is not None:
            bundle.calibration = cal
        return bundle
