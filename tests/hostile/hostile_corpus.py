"""The hostile-input corpus: every case is built on the fly by a function of a folder.

A case names what to build, what to do with it (open a model, load a pipeline or a
dataset, or a custom chain) and the outcome it must have: a SlimlineError of a given
class whose text names the file/field, or — for inputs that are odd but legitimate
(NaN weights, an unknown plugin) — a clean result checked by ``verify``.

Extends tests/core/test_bad_files.py (28 cases) without repeating its cases.
Pickle payloads create a canary file next to the case folder: its absence proves
that nothing from the file ran.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CANARY = "CANARY"  # created by every malicious payload (in the case folder's parent)


@dataclass
class Case:
    id: str
    kind: str                       # "model" | "pipeline" | "data"
    build: Callable[[Path], Path]   # folder → target
    expect: str | None              # error class name, or None (clean result, see verify)
    needle: str = ""                # must appear in the error text (case-insensitive)
    names: str = ""                 # the file/field the error must name (subject or message)
    run: Callable[[Path], Any] | None = None   # default: per kind
    verify: Callable[[Any], None] | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)


# ============================================================================ helpers


def canary_path(d: Path) -> Path:
    return d.parent / CANARY


class _Reduce:
    """An object whose unpickling calls ``fn(*args)``."""

    def __init__(self, fn: Any, args: tuple) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple:
        return (self.fn, self.args)


def payload(kind: str, canary: Path) -> Any:
    """A pickle-able object whose unpickling would create ``canary``."""
    import builtins
    import subprocess

    if kind == "os.system":
        return _Reduce(os.system, (f"touch {canary}",))
    if kind == "exec":
        return _Reduce(builtins.exec, (f"open({str(canary)!r}, 'w').close()",))
    if kind == "open":
        return _Reduce(builtins.open, (str(canary), "w"))
    if kind == "subprocess":
        return _Reduce(subprocess.Popen, (["touch", str(canary)],))
    if kind == "eval":
        return _Reduce(builtins.eval, (f"open({str(canary)!r}, 'w')",))
    raise ValueError(kind)


def evil_pickle(kind: str, canary: Path, protocol: int = 2, wrap: bool = True) -> bytes:
    obj: Any = payload(kind, canary)
    if wrap:  # looks like a state dict with one poisoned value
        obj = {"fc.weight": obj}
    return pickle.dumps(obj, protocol=protocol)


def onnx_mlp(path: Path, *, opset: int = 13, inputs_shape: list[Any] | None = None) -> Path:
    """x[batch,16] → MatMul(16×32)+Add → Relu → MatMul(32×4) → y. Built with onnx.helper (no torch)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "fc1.weight"),
             numpy_helper.from_array(np.zeros(32, np.float32), "fc1.bias"),
             numpy_helper.from_array(rng.standard_normal((32, 4)).astype(np.float32), "fc2.weight")]
    nodes = [helper.make_node("MatMul", ["x", "fc1.weight"], ["h0"], name="fc1"),
             helper.make_node("Add", ["h0", "fc1.bias"], ["h1"], name="fc1_bias"),
             helper.make_node("Relu", ["h1"], ["h2"], name="act"),
             helper.make_node("MatMul", ["h2", "fc2.weight"], ["y"], name="fc2")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, inputs_shape or ["batch", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph(nodes, "mlp", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="hostile")
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def onnx_add(path: Path, init: Any, x_shape: list[Any], nodes: list[Any] | None = None,
             extra_inits: list[Any] | None = None) -> Path:
    """y = x + init: a one-node graph around a hand-made initializer."""
    import onnx  # noqa: F401
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = nodes or [helper.make_node("Add", ["x", init.name], ["y"], name="add")]
    inits = ([init] if init is not None else []) + (extra_inits or [])
    g = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="hostile")
    m.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(m.SerializeToString())
    return path


def graph_span(data: bytes) -> tuple[int, int]:
    """Byte range of the serialized ModelProto.graph field (tag 0x3A + varint length + body)."""
    import onnx

    m = onnx.ModelProto()
    m.ParseFromString(data)
    body = m.graph.SerializeToString()
    start = data.find(b"\x3a" + _varint(len(body)) + body[:16])
    assert start >= 0
    return start, start + 1 + len(_varint(len(body))) + len(body)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


# ============================================================================ ONNX protobuf


def truncated_onnx(frac: float) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        full = onnx_mlp(d / "full.onnx").read_bytes()
        (d / "full.onnx").unlink()
        start, end = graph_span(full)
        cut = start + 2 + int((end - start - 2) * frac)
        assert start < cut < end, "the cut must fall inside the graph"
        p = d / f"cut{int(frac * 100)}.onnx"
        p.write_bytes(full[:cut])
        return p
    return make


def onnx_graph_tag_wiretype(d: Path) -> Path:
    data = bytearray(onnx_mlp(d / "m.onnx").read_bytes())
    start, _ = graph_span(bytes(data))
    data[start] = 0x3F  # field 7 with wire type 7: does not exist
    p = d / "badtag.onnx"
    p.write_bytes(bytes(data))
    (d / "m.onnx").unlink()
    return p


def onnx_graph_length_overflow(d: Path) -> Path:
    """The graph's length prefix claims 2**40 bytes."""
    import onnx

    data = onnx_mlp(d / "m.onnx").read_bytes()
    (d / "m.onnx").unlink()
    start, _ = graph_span(data)
    m = onnx.ModelProto()
    m.ParseFromString(data)
    old = _varint(len(m.graph.SerializeToString()))
    p = d / "lenoverflow.onnx"
    p.write_bytes(data[:start + 1] + _varint(2 ** 40) + data[start + 1 + len(old):])
    return p


def onnx_renamed_op(d: Path) -> Path:
    """A flipped byte in a node's op_type: MatMul → MatMuk (parses; the runtime must refuse)."""
    data = onnx_mlp(d / "m.onnx").read_bytes()
    (d / "m.onnx").unlink()
    i = data.find(b"MatMul")
    p = d / "unknown_op.onnx"
    p.write_bytes(data[:i + 5] + b"k" + data[i + 6:])
    return p


def onnx_dangling_input(d: Path) -> Path:
    """A flipped byte in a tensor name: a node reads a value nobody produces."""
    data = onnx_mlp(d / "m.onnx").read_bytes()
    (d / "m.onnx").unlink()
    i = data.find(b"h2")
    p = d / "dangling.onnx"
    p.write_bytes(data[:i] + b"q2" + data[i + 2:])
    return p


def onnx_random_flips(seed: int, n: int = 12) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        data = bytearray(onnx_mlp(d / "m.onnx").read_bytes())
        (d / "m.onnx").unlink()
        start, end = graph_span(bytes(data))
        rng = np.random.default_rng(seed)
        for pos in rng.integers(start, end, size=n):
            data[int(pos)] ^= int(rng.integers(1, 256))
        p = d / f"flipped{seed}.onnx"
        p.write_bytes(bytes(data))
        return p
    return make


# ============================================================================ zip archives


def _zip(path: Path, members: dict[str, bytes], compress: int = zipfile.ZIP_STORED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def ts_corrupt_data_pkl(d: Path) -> Path:
    return _zip(d / "script.pt", {"archive/code/__torch__.py": b"class Model:\n  pass\n",
                                  "archive/constants.pkl": pickle.dumps((), protocol=2),
                                  "archive/data.pkl": np.random.default_rng(11).bytes(300),
                                  "archive/version": b"3\n"})


def ts_missing_data_pkl(d: Path) -> Path:
    return _zip(d / "script.ts", {"archive/code/__torch__.py": b"class Model:\n  pass\n",
                                  "archive/constants.pkl": pickle.dumps((), protocol=2),
                                  "archive/version": b"3\n"})


def ts_evil_constants(d: Path) -> Path:
    """TorchScript-looking zip whose constants.pkl would run os.system if unpickled by Python."""
    return _zip(d / "evil_script.pt", {"archive/code/__torch__.py": b"class Model:\n  pass\n",
                                       "archive/constants.pkl": evil_pickle("os.system", canary_path(d)),
                                       "archive/data.pkl": evil_pickle("exec", canary_path(d)),
                                       "archive/version": b"3\n"})


def torchsave_corrupt_data_pkl(d: Path) -> Path:
    return _zip(d / "weights.pth", {"archive/data.pkl": b"\x80\x02" + np.random.default_rng(12).bytes(200),
                                    "archive/byteorder": b"little", "archive/version": b"3\n"})


def torchsave_missing_storage(d: Path) -> Path:
    import torch

    src = d / "src.pt"
    torch.save({"w": torch.arange(8, dtype=torch.float32)}, str(src))
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist() if "/data/" not in n}
    src.unlink()
    return _zip(d / "nostorage.pt", members)


def torchsave_evil_zip(kind: str, name: str) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        return _zip(d / name, {"archive/data.pkl": evil_pickle(kind, canary_path(d)),
                               "archive/byteorder": b"little", "archive/version": b"3\n"})
    return make


def zip_forged_sizes(d: Path) -> Path:
    """data.pkl's headers declare ~4 GiB uncompressed; the real member is 100 bytes (a zip-bomb header)."""
    p = _zip(d / "bomb_header.pt", {"archive/data.pkl": pickle.dumps({}, protocol=2) + b"." * 90,
                                    "archive/version": b"3\n"}, compress=zipfile.ZIP_DEFLATED)
    data = bytearray(p.read_bytes())
    big = struct.pack("<I", 0xFFFFFFF0)
    # local header: uncompressed size at offset 22; central directory entry: at offset 24
    i = data.find(b"PK\x03\x04")
    data[i + 22:i + 26] = big
    j = data.find(b"PK\x01\x02")
    data[j + 24:j + 28] = big
    p.write_bytes(bytes(data))
    return p


def zip_real_bomb(d: Path) -> Path:
    """A 256 MiB run of zeros deflated to ~250 KiB as a torch storage member."""
    import zlib

    p = d / "bomb.pt"
    zero = bytes(1 << 20)
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        with zf.open("archive/data/0", "w", force_zip64=True) as fh:
            for _ in range(256):
                fh.write(zero)
        zf.writestr("archive/version", b"3\n")
    del zlib
    return p


def zip_traversal(d: Path) -> Path:
    """Member names that would land outside the folder if anyone extracted them."""
    target = d / "a" / "b" / "traversal.pt"
    target.parent.mkdir(parents=True)
    return _zip(target, {"../../../ESCAPED_rel.txt": b"escaped",
                         str(d.parent / "ESCAPED_abs.txt"): b"escaped",
                         "archive/../../ESCAPED_mid.txt": b"escaped",
                         "archive/data.pkl": b"\x80\x02" + np.random.default_rng(13).bytes(64),
                         "archive/version": b"3\n"})


def pt2_bad_json(d: Path) -> Path:
    return _zip(d / "bad.pt2", {"m/archive_format": b"pt2", "m/models/model.json": b"{not json",
                                "m/data/weights/model_weights_config.json": b"[1, 2"})


def _pt2_weights(d: Path, name: str, meta: dict[str, Any], data: bytes) -> Path:
    cfg = {"config": {"w": {"path_name": "w0", "use_pickle": False, "tensor_meta": meta}}}
    return _zip(d / name, {"m/archive_format": b"pt2",
                           "m/data/weights/model_weights_config.json": json.dumps(cfg).encode(),
                           "m/data/weights/w0": data, "m/models/model.json": b"{}"})


def pt2_oob_shape(d: Path) -> Path:
    """Declares 10^8 float32 values backed by 16 bytes: reading them must not touch foreign memory."""
    return _pt2_weights(d, "oob.pt2", {"dtype": 7, "sizes": [{"as_int": 100_000_000}], "strides": [{"as_int": 1}],
                                      "storage_offset": {"as_int": 0}}, b"\0" * 16)


def pt2_oob_offset(d: Path) -> Path:
    return _pt2_weights(d, "offset.pt2", {"dtype": 7, "sizes": [{"as_int": 2}], "strides": [{"as_int": 1}],
                                         "storage_offset": {"as_int": 1 << 40}}, b"\0" * 16)


def pt2_negative_stride(d: Path) -> Path:
    return _pt2_weights(d, "negstride.pt2", {"dtype": 7, "sizes": [{"as_int": 4}], "strides": [{"as_int": -1000}],
                                            "storage_offset": {"as_int": 0}}, b"\0" * 16)


def pt2_evil_pickled_weight(d: Path) -> Path:
    cfg = {"config": {"w": {"path_name": "w0", "use_pickle": True, "tensor_meta": {}}}}
    return _zip(d / "pickled.pt2", {"m/archive_format": b"pt2",
                                    "m/data/weights/model_weights_config.json": json.dumps(cfg).encode(),
                                    "m/data/weights/w0": evil_pickle("os.system", canary_path(d)),
                                    "m/models/model.json": b"{}"})


# ============================================================================ random bytes


PREFIXES = {"zip": b"PK\x03\x04", "pickle": b"\x80\x02", "onnx-tag": b"\x08\x07\x12",
            "safetensors-len": (200).to_bytes(8, "little") + b'{"', "eocd": b"PK\x05\x06", "none": b"\xff\xfe\x00"}


def random_bytes(ext: str, prefix: str, seed: int) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / f"rnd_{prefix}{ext}"
        p.write_bytes(PREFIXES[prefix] + np.random.default_rng(seed).bytes(2048))
        return p
    return make


# ============================================================================ pickles


def legacy_evil(kind: str, name: str, protocol: int = 2) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / name
        p.write_bytes(evil_pickle(kind, canary_path(d), protocol=protocol))
        return p
    return make


def text_protocol_pickle(d: Path) -> Path:
    p = d / "proto0.pt"
    p.write_bytes(f"cos\nsystem\n(S'touch {canary_path(d)}'\ntR.".encode())
    return p


# ============================================================================ ONNX external data


def _external_model(d: Path, loc: str, offset: str = "0", length: str = "") -> Path:
    import onnx
    from onnx import TensorProto, numpy_helper

    md = d / "model_dir"
    md.mkdir(parents=True, exist_ok=True)
    w = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    path = onnx_add(md / "ext.onnx", w, [4])
    m = onnx.load(str(path))
    t = m.graph.initializer[0]
    (md / "w.data").write_bytes(t.raw_data)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in [("location", loc), ("offset", offset), ("length", length or "16")]:
        e = t.external_data.add()
        e.key, e.value = k, v
    path.write_bytes(m.SerializeToString())
    return path


def ext(loc: str, offset: str = "0", length: str = "") -> Callable[[Path], Path]:
    return lambda d: _external_model(d, loc, offset, length)


def ext_location_is_dir(d: Path) -> Path:
    path = _external_model(d, "sub")
    (path.parent / "sub").mkdir()
    return path


def ext_symlinked_folder(d: Path) -> Path:
    outside = d / "outside_dir"
    outside.mkdir()
    (outside / "w.data").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    path = _external_model(d, "link/w.data")
    os.symlink(outside, path.parent / "link")
    return path


def ext_fifo(d: Path) -> Path:
    path = _external_model(d, "pipe.data")
    os.mkfifo(path.parent / "pipe.data")
    return path


def ext_in_constant(d: Path) -> Path:
    """A Constant node's tensor (not an initializer) with external data in ../secret.data."""
    from onnx import TensorProto, helper

    (d / "secret.data").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    t = TensorProto(name="c", data_type=TensorProto.FLOAT, dims=[4])
    t.data_location = TensorProto.EXTERNAL
    for k, v in [("location", "../secret.data"), ("offset", "0"), ("length", "16")]:
        e = t.external_data.add()
        e.key, e.value = k, v
    nodes = [helper.make_node("Constant", [], ["c"], value=t, name="const"),
             helper.make_node("Add", ["x", "c"], ["y"], name="add")]
    return onnx_add(d / "model_dir" / "const.onnx", None, [4], nodes=nodes)


def ext_in_subgraph(d: Path) -> Path:
    """An If branch's initializer whose external data lives at an absolute path."""
    from onnx import TensorProto, helper

    (d / "secret.data").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    t = TensorProto(name="bw", data_type=TensorProto.FLOAT, dims=[4])
    t.data_location = TensorProto.EXTERNAL
    for k, v in [("location", str(d / "secret.data")), ("offset", "0"), ("length", "16")]:
        e = t.external_data.add()
        e.key, e.value = k, v
    out = helper.make_tensor_value_info("b_out", TensorProto.FLOAT, None)
    branch = helper.make_graph([helper.make_node("Add", ["x", "bw"], ["b_out"], name="b_add")], "b", [], [out],
                               initializer=[t])
    from onnx import numpy_helper

    cond = numpy_helper.from_array(np.array(True), "cond")
    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch, name="if")]
    return onnx_add(d / "model_dir" / "sub.onnx", None, [4], nodes=nodes, extra_inits=[cond])


# ============================================================================ dims and values


def onnx_init(name: str, dims: list[int], raw: bytes | None = None, floats: list[float] | None = None,
              x_shape: list[Any] | None = None) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        import onnx
        from onnx import TensorProto

        t = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=dims)
        if raw is not None:
            t.raw_data = raw
        if floats is not None:
            t.float_data.extend(floats)
        return onnx_add(d / name, t, x_shape or [1, 4])
    return make


def onnx_values(name: str, values: np.ndarray) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        from onnx import numpy_helper

        return onnx_add(d / name, numpy_helper.from_array(values, "w"), [int(values.size)])
    return make


def huge_input(d: Path) -> Path:
    return onnx_mlp(d / "huge_input.onnx", inputs_shape=["batch", 2 ** 40])


def safetensors_raw(name: str, header: Any, data: bytes = b"\0" * 16, raw_header: bytes | None = None
                    ) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        h = raw_header if raw_header is not None else json.dumps(header).encode()
        p = d / name
        p.write_bytes(len(h).to_bytes(8, "little") + h + data)
        return p
    return make


# ============================================================================ HF folders


def _tiny_safetensors(path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"embeddings.word_embeddings.weight": np.zeros((10, 4), np.float32)}, str(path))


def hf(config: bytes | str | Any, name: str, weights: str = "safetensors", index: Any = None
       ) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        folder = d / name
        folder.mkdir()
        raw = config if isinstance(config, bytes) else (config if isinstance(config, str) else json.dumps(config))
        (folder / "config.json").write_bytes(raw if isinstance(raw, bytes) else raw.encode())
        if weights == "safetensors":
            _tiny_safetensors(folder / "model.safetensors")
        elif weights == "evil_bin":
            (folder / "pytorch_model.bin").write_bytes(evil_pickle("os.system", canary_path(d)))
        if index is not None:
            (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        return folder
    return make


BERT_CFG = {"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 4, "num_hidden_layers": 1,
            "num_attention_heads": 1, "intermediate_size": 8, "vocab_size": 10, "max_position_embeddings": 16}


# ============================================================================ pipelines


def pipeline_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"format": "slimline.pipeline", "schema_version": 1, "name": "hostile",
                           "steps": [{"id": "s1", "plugin": "builtin.convert_onnx", "params": {}}],
                           "evaluation": {"latency": {"batch_sizes": [1], "runs": 5, "warmup": 1}}}
    doc.update(over)
    return doc


def with_step(plugin: str, params: dict[str, Any], sid: str = "s1") -> dict[str, Any]:
    return pipeline_doc(steps=[{"id": sid, "plugin": plugin, "params": params}])


def with_latency(**lat: Any) -> dict[str, Any]:
    return pipeline_doc(evaluation={"latency": {"batch_sizes": [1], "runs": 5, "warmup": 1, **lat}})


def pipe_json(doc: Any, name: str = "pipe.json") -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / name
        p.write_text(json.dumps(doc))
        return p
    return make


def pipe_bytes(data: bytes, name: str = "pipe.json") -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / name
        p.write_bytes(data)
        return p
    return make


def pipe_huge(d: Path) -> Path:
    p = d / "huge.json"
    with p.open("w") as fh:
        fh.write('{"format": "slimline.pipeline", "name": "')
        chunk = "x" * (1 << 20)
        for _ in range(17):
            fh.write(chunk)
        fh.write('", "steps": []}')
    return p


# ============================================================================ datasets


def npz(name: str, **arrays: Any) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / name
        np.savez(p, **arrays)
        return p
    return make


def npz_pickled_object(d: Path) -> Path:
    p = d / "objects.npz"
    arr = np.empty(2, dtype=object)
    arr[0] = payload("os.system", canary_path(d))
    arr[1] = payload("exec", canary_path(d))
    np.savez(p, x=arr)
    return p


def npy_pickled(d: Path) -> Path:
    p = d / "objects.npy"
    arr = np.empty(1, dtype=object)
    arr[0] = payload("open", canary_path(d))
    np.save(p, arr, allow_pickle=True)
    return p


def npz_forged_rows(d: Path) -> Path:
    """An .npz member whose .npy header declares 2**40 rows with only 64 bytes of data."""
    p = d / "forged.npz"
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (2 ** 40, 16)})
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("x.npy", buf.getvalue() + b"\0" * 64)
    return p


def npz_truncated(d: Path) -> Path:
    p = d / "cut.npz"
    np.savez(p, x=np.zeros((20, 16), np.float32))
    p.write_bytes(p.read_bytes()[:300])
    return p


def text_file(name: str, content: str | bytes) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        return p
    return make


def image_folder(files: dict[str, bytes | np.ndarray], name: str = "images") -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        root = d / name
        root.mkdir()
        for rel, content in files.items():
            f = root / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, np.ndarray):
                np.save(f, content)
            else:
                f.write_bytes(content)
        return root
    return make


def _png_bytes(h: int, w: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# ============================================================================ models for dataset cases


def model_for_data(d: Path, kind: str) -> Path:
    """An ONNX model the dataset case is checked against: mlp [batch,16] f32, image [batch,1,8,8], tokens int64."""
    from onnx import TensorProto, helper, numpy_helper

    if kind == "mlp":
        return onnx_mlp(d / "model.onnx")
    rng = np.random.default_rng(1)
    if kind == "image":
        x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])
        nodes = [helper.make_node("Flatten", ["image"], ["f"], name="flat"),
                 helper.make_node("MatMul", ["f", "w"], ["y"], name="fc")]
        w = numpy_helper.from_array(rng.standard_normal((64, 4)).astype(np.float32), "w")
    else:
        x = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", 8])
        nodes = [helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT, name="cast"),
                 helper.make_node("MatMul", ["f", "w"], ["y"], name="fc")]
        w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    m = helper.make_model(helper.make_graph(nodes, kind, [x], [y], initializer=[w]),
                          opset_imports=[helper.make_opsetid("", 13)], producer_name="hostile")
    m.ir_version = 8
    p = d / "model.onnx"
    p.write_bytes(m.SerializeToString())
    return p
