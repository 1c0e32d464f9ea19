"""ONNX files: safe parsing, external-data checks, handles and zero-copy weight access.

External data must stay inside the model's folder; the path check itself lives in
:mod:`slimline.core.models.safe_paths` (shared with the plugins that edit ONNX files).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from slimline.core.errors import ModelLoadError
from slimline.core.handle import Capabilities, ModelHandle, TensorSpec
from slimline.core.models.safe_paths import resolve_external
from slimline.core.models.tensors import (TensorEntry, WeightSource, cached, decode_bfloat16, decode_float8, file_key,
                                          file_size)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnx

MIN_OPSET = 7
_PASSTHROUGH = {"DequantizeLinear", "Cast", "Transpose", "Identity", "Reshape", "Unsqueeze", "Squeeze"}
# integer/bool initializers that are shapes or indices, not parameters
_NON_PARAM_TYPES = {"int64", "bool", "str", "object"}


def _err(path: Path | str, problem: str, hint: str) -> ModelLoadError:
    return ModelLoadError(problem, hint=hint, subject=str(path))


def parse_onnx(path: str | Path) -> "onnx.ModelProto":
    """Parse the protobuf without external data; clean errors for corrupt/truncated files."""
    import onnx
    from google.protobuf.message import DecodeError

    p = Path(path)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, TypeError, OSError, RuntimeError) as exc:
        raise _err(p, f"not a valid ONNX file: the protobuf could not be parsed ({type(exc).__name__}); "
                   "it is truncated, corrupt or not ONNX", "get the file again or re-export the model") from None
    except Exception as exc:  # noqa: BLE001 - protobuf backends raise assorted errors on garbage
        raise _err(p, f"not a valid ONNX file ({type(exc).__name__}: {exc})",
                   "get the file again or re-export the model") from None
    if model.ir_version <= 0 or not model.HasField("graph") or (
            not model.graph.node and not model.graph.output):
        raise _err(p, "the file parses as protobuf but holds no ONNX graph (no ir_version, nodes or outputs)",
                   "the file is corrupt or not an ONNX model; re-export it")
    return model


def cached_model(path: str | Path) -> "onnx.ModelProto":
    """Parsed model (no external data), cached per (path, mtime, size). Do not mutate."""
    return cached(file_key(path, "onnx-proto"), lambda: parse_onnx(path))


def iter_graphs(graph: "onnx.GraphProto") -> Iterator["onnx.GraphProto"]:
    """The graph and every subgraph (If/Loop/Scan bodies), depth first."""
    import onnx

    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from iter_graphs(g)


def _uses_external(t: "onnx.TensorProto") -> bool:
    import onnx

    return t.data_location == onnx.TensorProto.EXTERNAL


def _external_info(t: "onnx.TensorProto") -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def check_external_data(model: "onnx.ModelProto", path: Path) -> list[Path]:
    """Validate every external reference (location, bounds); return the distinct data files."""
    base = path.parent
    files: dict[str, Path] = {}
    for g in iter_graphs(model.graph):
        for t in g.initializer:
            if not _uses_external(t):
                continue
            info = _external_info(t)
            loc = info.get("location", "")
            if loc not in files:
                files[loc] = resolve_external(base, loc, path)
            size = file_size(files[loc])
            try:
                offset = int(info.get("offset", 0) or 0)
                length = int(info.get("length", 0) or 0)
            except ValueError:
                raise _err(path, f"initializer {t.name!r}: external data offset/length "
                           f"{info.get('offset')!r}/{info.get('length')!r} are not whole numbers",
                           "the file is corrupt or hand-edited; re-export the model") from None
            if offset < 0 or length < 0 or offset + length > size:
                raise _err(path, f"initializer {t.name!r} reads bytes {offset}..{offset + length} of {loc!r}, "
                           f"which has only {size} bytes (the data file is truncated)",
                           "copy the complete .data file next to the model")
    return list(files.values())


def dtype_name(elem_type: int) -> str:
    import onnx

    if elem_type == onnx.TensorProto.STRING:
        return "str"
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
    except Exception:  # noqa: BLE001 - undefined/unknown enum values
        return "unknown"


def _default_for_dim(name: str, pos: int, rank: int) -> int:
    low = name.lower()
    if pos == 0 or "batch" in low or low in ("n", "b", "bs"):
        return 1
    if any(k in low for k in ("seq", "len", "token", "position", "time", "step")):
        return 128
    if rank == 4 and pos in (2, 3) or any(k in low for k in ("height", "width")):
        return 224
    return 1


def _specs(values: Any, skip: set[str]) -> tuple[list[TensorSpec], dict[str, int]]:
    specs: list[TensorSpec] = []
    defaults: dict[str, int] = {}
    for v in values:
        if v.name in skip:
            continue
        tt = v.type.tensor_type
        shape: list[int | str] = []
        dims = list(tt.shape.dim) if tt.HasField("shape") else []
        for i, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(int(d.dim_value))
            else:
                name = d.dim_param or ("batch" if i == 0 else f"{v.name}_dim{i}")
                shape.append(name)
                defaults.setdefault(name, _default_for_dim(name, i, len(dims)))
        specs.append(TensorSpec(name=v.name, dtype=dtype_name(tt.elem_type) if tt.elem_type else "unknown",
                                shape=shape))
    return specs, defaults


def _initializer_numel(t: "onnx.TensorProto") -> int:
    n = 1
    for d in t.dims:
        n *= int(d)
    return n


def open_onnx(path: Path) -> ModelHandle:
    model = cached_model(path)
    data_files = check_external_data(model, path)
    g = model.graph
    init_names = {t.name for t in g.initializer}
    inputs, dims = _specs(g.input, init_names)
    outputs, out_dims = _specs(g.output, set())
    for k, v in out_dims.items():
        dims.setdefault(k, v)
    params = 0
    has_sub = False
    for sub in iter_graphs(g):
        has_sub = has_sub or sub is not g
        for t in sub.initializer:
            if any(int(d) < 0 for d in t.dims):
                raise _err(path, f"initializer {t.name!r} declares a negative dimension {list(t.dims)}; "
                           "the file is corrupt", "get the file again or re-export the model")
            if dtype_name(t.data_type) not in _NON_PARAM_TYPES:
                params += _initializer_numel(t)
    opsets = {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
    opset = opsets.get("ai.onnx")
    caps = Capabilities()
    if opset is not None and opset < MIN_OPSET:
        caps = Capabilities(run=False, compress=False,
                            reason=f"opset {opset} is older than {MIN_OPSET}: inspect only; upgrade it with "
                                   "onnx.version_converter.convert_version(model, 13) and open the result")
    files = [str(path)] + [str(f) for f in data_files]
    producer = f"{model.producer_name} {model.producer_version}".strip()
    return ModelHandle(
        path=str(path), format="onnx", family="onnx", files=files, inputs=inputs, outputs=outputs,
        dim_defaults=dims, param_count=params, bytes_on_disk=sum(file_size(f) for f in files),
        producer=producer, opset=opset, trusted=True, capabilities=caps,
        meta={"ir_version": int(model.ir_version), "opsets": opsets, "has_subgraphs": has_sub,
              "initializers_as_inputs": sum(1 for i in g.input if i.name in init_names),
              "external_data": [Path(f).name for f in data_files], "nodes": len(g.node)},
    )


def load_onnx(handle_or_path: ModelHandle | str | Path, *, load_external: bool = True) -> "onnx.ModelProto":
    """A fresh ModelProto (safe to edit); external data only from inside the model's folder."""
    import onnx

    path = Path(handle_or_path.path if isinstance(handle_or_path, ModelHandle) else handle_or_path)
    if isinstance(handle_or_path, ModelHandle) and handle_or_path.format != "onnx":
        raise _err(path, f"this is a {handle_or_path.format} model, not ONNX",
                   "add a 'Convert to ONNX' step first")
    if not path.is_file():
        raise _err(path, "no such ONNX file", "check the path; it may have been moved or deleted")
    model = parse_onnx(path)
    check_external_data(model, path)
    if load_external:
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:  # noqa: BLE001
            raise _err(path, f"could not read the external data ({exc})",
                       "copy the complete .data file(s) next to the model") from None
    return model


# --------------------------------------------------------------------------- weights

def _storage_dtype(data_type: int) -> "np.dtype":
    import numpy as np
    import onnx

    T = onnx.TensorProto
    if data_type == T.BFLOAT16:
        return np.dtype(np.uint16)
    if data_type in (T.FLOAT8E4M3FN, T.FLOAT8E4M3FNUZ, T.FLOAT8E5M2, T.FLOAT8E5M2FNUZ):
        return np.dtype(np.uint8)
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type))


def _consumers(model: "onnx.ModelProto") -> dict[str, tuple[str, str]]:
    """Initializer name → (layer = consuming node name, op type), looking through DequantizeLinear/Cast/Transpose."""
    out: dict[str, tuple[str, str]] = {}
    for gi, g in enumerate(iter_graphs(model.graph)):
        by_input: dict[str, list[tuple[str, str, list[str]]]] = {}
        for i, node in enumerate(g.node):
            name = node.name or (f"{node.op_type}_{gi}_{i}" if gi else f"{node.op_type}_{i}")
            for inp in node.input:
                by_input.setdefault(inp, []).append((name, node.op_type, list(node.output)))
        for t in g.initializer:
            uses = by_input.get(t.name)
            if not uses:
                out.setdefault(t.name, ("", ""))
                continue
            name, op, outs = uses[0]
            if op in _PASSTHROUGH and len(outs) == 1 and len(by_input.get(outs[0], [])) == 1:
                nxt = by_input[outs[0]][0]
                name, op = nxt[0], nxt[1]
            out[t.name] = (name, op)
    return out


def onnx_weight_source(path: Path) -> WeightSource:
    """Initializers (incl. subgraphs and external data) as zero-copy NumPy views."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = cached_model(path)
    data_files = check_external_data(model, path)
    consumers = _consumers(model)
    tensors: dict[str, "onnx.TensorProto"] = {}
    entries: list[TensorEntry] = []
    for g in iter_graphs(model.graph):
        for t in g.initializer:
            if t.name in tensors or t.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
                continue
            tensors[t.name] = t
            layer, op = consumers.get(t.name, ("", ""))
            entries.append(TensorEntry(t.name, layer, op, [int(d) for d in t.dims], dtype_name(t.data_type)))
    maps: dict[Path, np.ndarray] = {}
    del data_files

    def load(name: str) -> np.ndarray:
        t = tensors[name]
        shape = [int(d) for d in t.dims]
        T = onnx.TensorProto
        raw_types = (T.BFLOAT16, T.FLOAT8E4M3FN, T.FLOAT8E5M2)
        if _uses_external(t):
            info = _external_info(t)
            f = resolve_external(path.parent, info.get("location", ""), path)
            if f not in maps:
                maps[f] = np.memmap(f, dtype=np.uint8, mode="r")
            off = int(info.get("offset", 0) or 0)
            dt = _storage_dtype(t.data_type)
            n = int(np.prod(shape, dtype=np.int64)) if shape else 1
            length = int(info.get("length", 0) or 0) or n * dt.itemsize
            arr = np.frombuffer(maps[f][off:off + length], dtype=dt, count=n).reshape(shape)
        elif t.HasField("raw_data") and (t.data_type in raw_types or t.data_type not in (T.INT4, T.UINT4)):
            arr = np.frombuffer(t.raw_data, dtype=_storage_dtype(t.data_type)).reshape(shape)
        else:
            arr = numpy_helper.to_array(t)
            if arr.dtype.kind not in "fiub":
                arr = arr.astype(np.float32)
            return arr
        if t.data_type == T.BFLOAT16:
            return decode_bfloat16(arr)
        if t.data_type in (T.FLOAT8E4M3FN, T.FLOAT8E5M2):
            return decode_float8(arr, "float8_e4m3fn" if t.data_type == T.FLOAT8E4M3FN else "float8_e5m2")
        return arr

    return WeightSource(entries, load, decoded=True)


# --------------------------------------------------------------------------- format table entries

def onnx_open(path: Path, trust: bool) -> ModelHandle:
    """Opener for the table of formats (ONNX never unpickles, so ``trust`` is unused)."""
    del trust
    return open_onnx(path)


def onnx_weights(handle: ModelHandle) -> WeightSource:
    return onnx_weight_source(Path(handle.path))
