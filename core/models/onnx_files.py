"""ONNX files: safe parsing, external-data checks, handles and zero-copy weight access.

External data must stay inside the model's folder; the path check itself lives in
:mod:`slimline.core.models.safe_paths` (shared with the plugins that edit ONNX files).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimline.core.errors import ModelLoadError
from slimline.core.handle import Capabilities, ModelHandle, TensorSpec
from slimline.core.models.safe_paths import resolve_external
from slimline.core.models.tensors import (
    INDEX,
    SCALAR,
    WEIGHT,
    TensorEntry,
    WeightSource,
    cached,
    decode_bfloat16,
    decode_float8,
    file_key,
    file_size,
    tensor_kind,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnx

MIN_OPSET = 7
_PASSTHROUGH = {"DequantizeLinear", "Cast", "Transpose", "Identity", "Reshape", "Unsqueeze", "Squeeze"}


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


@dataclass
class OnnxTensor:
    """One tensor an ONNX file stores: an initializer or a Constant node's value, in any (sub)graph."""

    name: str                   # unique across the model (a repeated name gets " @ location")
    tensor: "onnx.TensorProto"  # the stored proto (value_float(s)/value_int(s) become small protos)
    location: str               # "initializer", "Constant node X", "If node Y > then_branch > Constant node Z"
    kind: str                   # weight | scalar | index (tensors.tensor_kind)
    graph: "onnx.GraphProto"    # the (sub)graph holding it
    node: "onnx.NodeProto | None" = None   # the Constant node, None for an initializer

    @property
    def numel(self) -> int:
        return _initializer_numel(self.tensor)


def is_constant_node(node: "onnx.NodeProto") -> bool:
    return node.op_type == "Constant" and node.domain in ("", "ai.onnx")


def constant_value(node: "onnx.NodeProto") -> "tuple[onnx.TensorProto, bool] | None":
    """The tensor a Constant node produces and whether it is an index (value_int(s)); None for strings."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    A = onnx.AttributeProto
    name = node.output[0] if node.output else ""
    for a in node.attribute:
        if a.name == "value" and a.type == A.TENSOR:
            return a.t, False
        if a.name == "sparse_value" and a.type == A.SPARSE_TENSOR:
            sp = a.sparse_tensor
            values = numpy_helper.to_array(sp.values)
            dense = np.zeros([int(d) for d in sp.dims], dtype=values.dtype)
            idx = numpy_helper.to_array(sp.indices) if sp.HasField("indices") else np.zeros((0,), np.int64)
            if idx.ndim == 2:
                dense[tuple(idx.T)] = values
            else:
                dense.reshape(-1)[idx] = values
            return numpy_helper.from_array(dense, name), False
        if a.name == "value_float":
            return helper.make_tensor(name, onnx.TensorProto.FLOAT, [], [a.f]), False
        if a.name == "value_floats":
            return helper.make_tensor(name, onnx.TensorProto.FLOAT, [len(a.floats)], list(a.floats)), False
        if a.name == "value_int":
            return helper.make_tensor(name, onnx.TensorProto.INT64, [], [a.i]), True
        if a.name == "value_ints":
            return helper.make_tensor(name, onnx.TensorProto.INT64, [len(a.ints)], list(a.ints)), True
    return None


# ops whose one-value inputs are still trained parameters (a 1-channel Conv bias, a shared PReLU slope)
_PARAM_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "InstanceNormalization",
              "LayerNormalization", "GroupNormalization", "PRelu", "LSTM", "GRU", "RNN"}


def _kind(t: "onnx.TensorProto", index: bool, consumer_op: str = "") -> str:
    if index:
        return INDEX
    kind = tensor_kind(dtype_name(t.data_type), _initializer_numel(t), scalars_are_weights=False)
    if kind == SCALAR and consumer_op in _PARAM_OPS and _initializer_numel(t) == 1 and len(t.dims) >= 1:
        return WEIGHT
    return kind


def onnx_tensors(model: "onnx.ModelProto") -> list[OnnxTensor]:
    """Every stored tensor: initializers and Constant nodes of the graph and of every If/Loop/Scan body.

    Why all three: paddle2onnx keeps every weight in Constant nodes, and some exports keep
    theirs only inside If branches; counting initializers alone reports 0 parameters.
    """
    import onnx

    out: list[OnnxTensor] = []
    seen: set[str] = set()
    direct: dict[str, str] = {}  # tensor name -> op type of its first reader (subgraphs read outer names too)
    for sub in iter_graphs(model.graph):
        for node in sub.node:
            for inp in node.input:
                direct.setdefault(inp, node.op_type)

    def op_of(name: str) -> str:
        return direct.get(name, "")

    def add(name: str, t: "onnx.TensorProto", location: str, kind: str, g: Any, node: Any = None) -> None:
        if t.data_type == onnx.TensorProto.UNDEFINED:
            return
        key = name if name not in seen else f"{name} @ {location}"
        seen.add(key)
        out.append(OnnxTensor(key, t, location, kind, g, node))

    def where(prefix: str, what: str) -> str:
        return f"{prefix} > {what}" if prefix else what

    def walk(g: "onnx.GraphProto", prefix: str) -> None:
        for t in g.initializer:
            add(t.name, t, where(prefix, "initializer"), _kind(t, False, op_of(t.name)), g)
        for i, node in enumerate(g.node):
            label = f"{node.op_type} node {node.name or (node.output[0] if node.output else i)}"
            if is_constant_node(node) and node.output:
                found = constant_value(node)
                if found is not None:
                    t, index = found
                    add(node.output[0], t, where(prefix, label), _kind(t, index, op_of(node.output[0])), g, node)
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g, where(prefix, f"{label} > {a.name}"))
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for j, sub in enumerate(a.graphs):
                        walk(sub, where(prefix, f"{label} > {a.name}[{j}]"))

    walk(model.graph, "")
    return out


def _uses_external(t: "onnx.TensorProto") -> bool:
    import onnx

    return t.data_location == onnx.TensorProto.EXTERNAL


def _external_info(t: "onnx.TensorProto") -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def check_external_data(model: "onnx.ModelProto", path: Path) -> list[Path]:
    """Validate every external reference (location, bounds); return the distinct data files."""
    base = path.parent
    files: dict[str, Path] = {}
    for found in onnx_tensors(model):
        t = found.tensor
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
    places = {"initializers": 0, "constant_nodes": 0, "subgraphs": 0}
    other = 0
    found = onnx_tensors(model)
    for f in found:
        if any(int(d) < 0 for d in f.tensor.dims):
            raise _err(path, f"tensor {f.name!r} ({f.location}) declares a negative dimension "
                       f"{list(f.tensor.dims)}; the file is corrupt", "get the file again or re-export the model")
        if f.kind != WEIGHT:
            other += 1
            continue
        params += f.numel
        place = "subgraphs" if f.graph is not g else ("constant_nodes" if f.node is not None else "initializers")
        places[place] += f.numel
    has_sub = any(sub is not g for sub in iter_graphs(g))
    opsets = {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
    opset = opsets.get("ai.onnx")
    caps = Capabilities()
    if opset is not None and opset < MIN_OPSET:
        caps = Capabilities(run=False, compress=False,
                            reason=f"opset {opset} is older than {MIN_OPSET}: inspect only; upgrade it with "
                                   "onnx.version_converter.convert_version(model, 13) and open the result")
    files = [str(path)] + [str(f) for f in data_files]
    producer = f"{model.producer_name} {model.producer_version}".strip()
    meta: dict[str, Any] = {
        "ir_version": int(model.ir_version), "opsets": opsets, "has_subgraphs": has_sub,
        "initializers_as_inputs": sum(1 for i in g.input if i.name in init_names),
        "external_data": [Path(f).name for f in data_files], "nodes": len(g.node),
        "weights_by_place": places, "tensors": sum(1 for f in found if f.kind == WEIGHT), "other_tensors": other}
    from slimline.core.lm.genai import kv_cache_layout, kv_view_meta, kv_view_specs

    kv = kv_cache_layout(model, path)
    if kv is not None:  # a KV-cache decoder: shown (and run) as a full-sequence LM with an empty past
        inputs, outputs, dims = kv_view_specs(inputs, outputs, kv)
        meta.update(kv_view_meta(kv, path, outputs))
        if kv.head_size is None:
            caps = Capabilities(run=False, compress=True,
                                reason="a KV-cache decoder whose head size is unknown (symbolic past dims and no "
                                       "genai_config.json beside it): keep its genai_config.json next to it")
    return ModelHandle(
        path=str(path), format="onnx", family="onnx", files=files, inputs=inputs, outputs=outputs,
        dim_defaults=dims, param_count=params, bytes_on_disk=sum(file_size(f) for f in files),
        producer=producer, opset=opset, trusted=True, capabilities=caps, meta=meta,
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
    """Tensor name → (layer = consuming node name, op type), looking through DequantizeLinear/Cast/Transpose.

    Subgraph nodes may read a tensor of an outer graph, so uses are collected over all graphs.
    """
    by_input: dict[str, list[tuple[str, str, list[str]]]] = {}
    for gi, g in enumerate(iter_graphs(model.graph)):
        for i, node in enumerate(g.node):
            name = node.name or (f"{node.op_type}_{gi}_{i}" if gi else f"{node.op_type}_{i}")
            for inp in node.input:
                by_input.setdefault(inp, []).append((name, node.op_type, list(node.output)))
    out: dict[str, tuple[str, str]] = {}
    for inp, uses in by_input.items():
        name, op, outs = uses[0]
        if op in _PASSTHROUGH and len(outs) == 1 and len(by_input.get(outs[0], [])) == 1:
            nxt = by_input[outs[0]][0]
            name, op = nxt[0], nxt[1]
        out[inp] = (name, op)
    return out


def onnx_weight_source(path: Path) -> WeightSource:
    """Initializers and Constant-node tensors (incl. subgraphs and external data) as zero-copy NumPy views."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = cached_model(path)
    check_external_data(model, path)
    consumers = _consumers(model)
    tensors: dict[str, "onnx.TensorProto"] = {}
    entries: list[TensorEntry] = []
    for f in onnx_tensors(model):
        t = f.tensor
        if t.data_type == onnx.TensorProto.STRING:
            continue
        tensors[f.name] = t
        stored = f.node.output[0] if f.node is not None else t.name
        layer, op = consumers.get(stored, ("", ""))
        entries.append(TensorEntry(f.name, layer, op, [int(d) for d in t.dims], dtype_name(t.data_type),
                                   kind=f.kind, location=f.location))
    maps: dict[Path, np.ndarray] = {}

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
