"""Shared tensor primitives: dtype maps, tensor listings, readers and the file-identity cache.

The bottom layer of slimline.core.models: every per-format module builds on these and
nothing here imports another module of the package. Every format exposes the same thing:
a list of :class:`TensorEntry` (name, owning layer, op type, shape, dtype — known without
reading values) and ``array(name)`` returning a NumPy view (memory-mapped where the file
allows). Sources are cached per (path, mtime, size) so a histogram after the inventory
does not reload.
"""
from __future__ import annotations

import json
import os
import re
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimline.core.errors import ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

SAFETENSORS_DTYPES: dict[str, tuple[str, str]] = {
    "F64": ("float64", "float64"), "F32": ("float32", "float32"), "F16": ("float16", "float16"),
    "BF16": ("uint16", "bfloat16"), "I64": ("int64", "int64"), "I32": ("int32", "int32"),
    "I16": ("int16", "int16"), "I8": ("int8", "int8"), "U8": ("uint8", "uint8"), "U16": ("uint16", "uint16"),
    "U32": ("uint32", "uint32"), "U64": ("uint64", "uint64"), "BOOL": ("bool", "bool"),
    "F8_E4M3": ("uint8", "float8_e4m3fn"), "F8_E5M2": ("uint8", "float8_e5m2"),
}
# dtypes whose raw bytes need decoding before statistics
RAW_ENCODED = {"bfloat16", "float8_e4m3fn", "float8_e5m2"}
# integer/bool/string tensors are shapes, indices, masks and counters, never trained parameters
INDEX_DTYPES = {"int64", "uint64", "bool", "str", "object", "unknown"}
# what a listed tensor is: only "weight" tensors count as parameters and get statistics and charts
WEIGHT, SCALAR, INDEX = "weight", "scalar", "index"


def tensor_kind(dtype: str, numel: int, *, scalars_are_weights: bool = True) -> str:
    """``weight``, ``scalar`` (one value: an epsilon, a Clip bound such as -inf) or ``index`` (shapes, masks).

    An empty tensor (a [0, 4] shape) stays a weight with 0 parameters: it is listed, never a scalar.

    Exported graphs (ONNX) are full of scalar constants that are not parameters, so their
    scalars are kept apart; in a torch state_dict a one-value tensor is a trained parameter
    (PReLU slope, temperature), so there ``scalars_are_weights`` stays True.
    """
    if dtype in INDEX_DTYPES:
        return INDEX
    if numel == 1 and not scalars_are_weights:
        return SCALAR
    return WEIGHT


@dataclass
class TensorEntry:
    """One weight tensor as listed without reading its values."""

    name: str
    layer: str
    op_type: str
    shape: list[int]
    dtype: str
    kind: str = WEIGHT      # weight | scalar | index (see tensor_kind)
    location: str = ""      # where the file keeps it, e.g. "Constant node X", "If node Y > then_branch"

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n


@dataclass
class WeightSource:
    """Tensor listing plus a loader; ``load(name)`` returns the raw NumPy array."""

    entries: list[TensorEntry]
    load: Callable[[str], "np.ndarray"]
    note: str = ""
    decoded: bool = False  # load() already returns float32 for bfloat16/float8
    _by_name: dict[str, TensorEntry] = field(default_factory=dict, repr=False)

    def entry(self, name: str) -> TensorEntry:
        if not self._by_name:
            self._by_name = {e.name: e for e in self.entries}
        if name not in self._by_name:
            raise KeyError(name)
        return self._by_name[name]

    def array(self, name: str) -> "np.ndarray":
        """Values as a NumPy array; bfloat16/float8 decoded to float32."""
        e = self.entry(name)
        arr = self.load(name)
        if self.decoded:
            return arr
        if e.dtype == "bfloat16":
            return decode_bfloat16(arr)
        if e.dtype in ("float8_e4m3fn", "float8_e5m2"):
            return decode_float8(arr, e.dtype)
        return arr


def decode_bfloat16(raw: "np.ndarray") -> "np.ndarray":
    import numpy as np

    return (raw.astype(np.uint32) << 16).view(np.float32)


def decode_float8(raw: "np.ndarray", dtype: str) -> "np.ndarray":
    """Decode float8 bytes with ml_dtypes when available (installed with onnx)."""
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - ml_dtypes ships with onnx >= 1.16
        raise ModelLoadError(f"cannot decode {dtype} values without the ml_dtypes package",
                             hint="pip install ml_dtypes") from None
    t = ml_dtypes.float8_e4m3fn if dtype == "float8_e4m3fn" else ml_dtypes.float8_e5m2
    return raw.view(t).astype("float32")


# --------------------------------------------------------------------------- cache

_CACHE: "OrderedDict[tuple, Any]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 4


def file_key(path: str | Path, tag: str = "") -> tuple:
    """Cache key that changes when the file changes."""
    p = Path(path)
    st = p.stat()
    return (tag, str(p.resolve()), st.st_mtime_ns, st.st_size)


def cached(key: tuple, build: Callable[[], Any]) -> Any:
    """Small per-process LRU keyed by file identity (path, mtime, size)."""
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    value = build()
    with _CACHE_LOCK:
        _CACHE[key] = value
        _CACHE.move_to_end(key)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return value


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


# --------------------------------------------------------------------------- safetensors

def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, validated against the file size."""
    import numpy as np

    size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise ModelLoadError("the safetensors file is truncated (no header)", subject=str(path),
                                 hint="get the file again")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8 or n > 100 * 1024 * 1024:
            raise ModelLoadError("the safetensors header is larger than the file: it is truncated or corrupt",
                                 subject=str(path), hint="get the file again")
        try:
            header = json.loads(fh.read(n))
        except (ValueError, RecursionError) as exc:
            raise ModelLoadError(f"the safetensors header is not valid JSON ({exc})", subject=str(path),
                                 hint="the file is corrupt; get it again") from None
    if not isinstance(header, dict):
        raise ModelLoadError("the safetensors header is not a JSON object", subject=str(path),
                             hint="the file is corrupt; get it again")
    data_len = size - 8 - n
    for k, v in header.items():
        if k == "__metadata__":
            continue
        try:
            b, e = v["data_offsets"]
            ok = v["dtype"] in SAFETENSORS_DTYPES and 0 <= b <= e <= data_len
            shape = v["shape"]
            ok = ok and isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)
            if ok:  # the byte range must hold exactly the declared shape
                numel = 1
                for d in shape:
                    numel *= d
                ok = numel * np.dtype(SAFETENSORS_DTYPES[v["dtype"]][0]).itemsize == e - b
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ModelLoadError(f"tensor {k!r} has an invalid entry or lies beyond the end of the file "
                                 "(the file is truncated or corrupt)", subject=str(path), hint="get the file again")
    header["__data_start__"] = 8 + n
    return header


def safetensors_entries(path: Path, header: dict[str, Any]) -> list[TensorEntry]:
    out = []
    for k, v in header.items():
        if k.startswith("__"):
            continue
        layer = k.rsplit(".", 1)[0] if "." in k else ""
        shape = [int(d) for d in v["shape"]]
        dtype = SAFETENSORS_DTYPES[v["dtype"]][1]
        numel = 1
        for d in shape:
            numel *= d
        out.append(TensorEntry(k, layer, "", shape, dtype, kind=tensor_kind(dtype, numel)))
    return out


def safetensors_source(files: list[Path], op_types: dict[str, str] | None = None) -> WeightSource:
    """Memory-mapped reader over one or more safetensors files (sharded HF models)."""
    import numpy as np

    entries: list[TensorEntry] = []
    where: dict[str, tuple[Path, dict[str, Any], int]] = {}
    for f in files:
        header = read_safetensors_header(f)
        for e in safetensors_entries(f, header):
            if op_types:
                e.op_type = op_types.get(e.layer, "")
            entries.append(e)
            where[e.name] = (f, header[e.name], header["__data_start__"])
    maps: dict[Path, np.ndarray] = {}

    def load(name: str) -> np.ndarray:
        f, info, start = where[name]
        if f not in maps:
            maps[f] = np.memmap(f, dtype=np.uint8, mode="r") if f.stat().st_size else np.zeros(0, np.uint8)
        b, e = info["data_offsets"]
        np_dtype = np.dtype(SAFETENSORS_DTYPES[info["dtype"]][0])
        buf = maps[f][start + b:start + e]
        return np.frombuffer(buf, dtype=np_dtype).reshape(info["shape"])

    entries = [e for e in entries if not e.name.endswith("num_batches_tracked")]  # a counter, not a weight
    entries.sort(key=_depth_order(op_types or {}))
    return WeightSource(entries, load)


def _depth_order(op_types: dict[str, str]) -> Callable[["TensorEntry"], tuple]:
    """Sort key: layers in model order (the spec's walk order), else natural name order.

    safetensors headers are alphabetical ("1.x" < "12.x" < "4.x"), which scrambles depth.
    """
    rank = {layer: i for i, layer in enumerate(op_types)}

    def natural(name: str) -> tuple:
        return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))

    return lambda e: (rank.get(e.layer, len(rank)), natural(e.name))


# --------------------------------------------------------------------------- torch modules / dicts

def tensor_dict_source(tensors: dict[str, Any], op_types: dict[str, str] | None = None) -> WeightSource:
    """Source over a dict of torch tensors (state_dict, TorchScript, trusted pickles)."""
    entries = []
    for k, t in tensors.items():
        layer = k.rsplit(".", 1)[0] if "." in k else ""
        dtype = str(t.dtype).replace("torch.", "")
        entries.append(TensorEntry(k, layer, (op_types or {}).get(layer, ""), list(t.shape), dtype,
                                   kind=tensor_kind(dtype, int(t.numel()))))

    def load(name: str) -> "np.ndarray":
        import torch

        t = tensors[name].detach()
        if t.dtype == torch.bfloat16 or str(t.dtype).startswith("torch.float8"):
            t = t.float()
        return t.cpu().numpy()

    return WeightSource(entries, load, decoded=True)


def module_op_types(module: Any) -> dict[str, str]:
    """Submodule path → class name (TorchScript keeps the original Python class name)."""
    out = {}
    for path, m in module.named_modules():
        name = getattr(m, "original_name", None) or type(m).__name__
        out[path] = str(name)
    return out


def module_source(module: Any) -> WeightSource:
    state = {k: v for k, v in module.state_dict(keep_vars=False).items() if hasattr(v, "shape")}
    return tensor_dict_source(state, module_op_types(module))


def file_size(path: str | os.PathLike[str]) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0
