"""Every corpus model opens, inventories, gets statistics and goes through `slimline inspect` without a traceback,
and the engine's parameter count matches one computed here with onnx/torch/safetensors/GGUF directly.

The expected counts come from the file formats, not from Slimline: ONNX counts initializers, Constant-node
tensors and both inside every subgraph (If/Loop/Scan bodies); tensors of int64/bool/string type are shapes,
indices and masks, not parameters. The engine may leave out scalar constants (epsilon, 1.0, ...), so for ONNX its
count must lie between the non-scalar and the full count; likewise TorchScript between its parameters and
parameters + floating buffers. Checkpoints count the model's floating tensors only.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from .fetch import model_path
from .manifest import MODELS, RealModel

# GGUF files open as their dequantized float32 HF folder (built once into the workspace's GGUF cache): the count
# is the GGUF's own tensor elements (a tied lm_head is not stored, so it is counted once).
PARAMS = [pytest.param(m, id=m.id, marks=pytest.mark.real(m.id)) for m in MODELS]
_NON_PARAM_ONNX = ("INT64", "BOOL", "STRING", "UNDEFINED")
_NON_PARAM_DTYPES = {"int64", "bool", "str", "object", "unknown"}
_ONNX_EXPORTERS = ("torch.onnx", "tf2onnx", "paddle2onnx", "spox", "onnx.quantize")


# --------------------------------------------------------------------------- independent counts

def _onnx_counts(path: Path) -> tuple[int, int]:
    """(all parameter values, values in non-scalar tensors) over initializers + Constant nodes + subgraphs."""
    import onnx

    T = onnx.TensorProto
    skip = {getattr(T, n) for n in _NON_PARAM_ONNX}
    model = onnx.load(str(path), load_external_data=False)
    total = big = 0

    def tensor(t: onnx.TensorProto) -> None:
        nonlocal total, big
        if t.data_type in skip:
            return
        n = 1
        for d in t.dims:
            n *= int(d)
        total += n
        big += n if n > 1 else 0

    def graph(g: onnx.GraphProto) -> None:
        nonlocal total, big
        for t in g.initializer:
            tensor(t)
        for node in g.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    graph(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sub in a.graphs:
                        graph(sub)
                elif node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                    if a.name == "value":
                        tensor(a.t)
                    elif a.name == "sparse_value":
                        tensor(a.sparse_tensor.values)
                    elif a.name == "value_float":
                        total += 1
                    elif a.name == "value_floats":
                        total += len(a.floats)
                        big += len(a.floats) if len(a.floats) > 1 else 0

    graph(model.graph)
    return total, big


def _flat_tensors(obj: object, out: list) -> list:
    import torch

    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _flat_tensors(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _flat_tensors(v, out)
    return out


def _state_dict_count(path: Path, state_key: str | None) -> int:
    import torch

    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if state_key is not None:
        obj = obj[state_key]
    return sum(t.numel() for t in _flat_tensors(obj, []) if t.is_floating_point())


def _torchscript_counts(path: Path) -> tuple[int, int]:
    """(trainable parameters, parameters + floating buffers such as a fixed STFT basis)."""
    import torch

    module = torch.jit.load(str(path), map_location="cpu")
    params = sum(p.numel() for p in module.parameters())
    return params, sum(t.numel() for t in module.state_dict().values() if t.is_floating_point())


def _safetensors_count(path: Path) -> int:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    total = 0
    for k, v in header.items():
        if k == "__metadata__" or v["dtype"] not in ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"):
            continue
        n_el = 1
        for d in v["shape"]:
            n_el *= int(d)
        total += n_el
    return total


def _gguf_count(path: Path) -> int:
    """Sum of tensor element counts from the GGUF (v2/v3) tensor-info table."""
    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    with open(path, "rb") as f:
        def read(fmt: str) -> tuple:
            size = struct.calcsize("<" + fmt)
            return struct.unpack("<" + fmt, f.read(size))

        def string() -> str:
            (n,) = read("Q")
            return f.read(n).decode("utf-8", "replace")

        def value(vtype: int) -> None:
            if vtype in scalar:
                read(scalar[vtype])
            elif vtype == 8:
                string()
            elif vtype == 9:
                etype, n = read("IQ")
                for _ in range(n):
                    value(etype)
            else:
                raise ValueError(f"unknown GGUF value type {vtype}")

        assert f.read(4) == b"GGUF"
        (version,) = read("I")
        assert version in (2, 3), version
        n_tensors, n_kv = read("QQ")
        for _ in range(n_kv):
            string()
            (vtype,) = read("I")
            value(vtype)
        total = 0
        for _ in range(n_tensors):
            string()
            (n_dims,) = read("I")
            dims = read("Q" * n_dims)
            read("IQ")  # ggml type, data offset
            n_el = 1
            for d in dims:
                n_el *= int(d)
            total += n_el
    return total


def expected_range(m: RealModel, path: Path) -> tuple[int, int]:
    """(lowest, highest) parameter count the engine may report for this file."""
    if m.exporter in _ONNX_EXPORTERS:
        total, big = _onnx_counts(path)
        return big, total
    if m.exporter == "state_dict":
        n = _state_dict_count(path, m.state_key)
    elif m.exporter == "torchscript":
        return _torchscript_counts(path)
    elif m.exporter == "safetensors":
        n = _safetensors_count(path)
    elif m.exporter == "gguf":
        n = _gguf_count(path)
    elif m.exporter == "hf_folder":
        n = sum(_safetensors_count(f) for f in sorted(path.glob("*.safetensors")))
    else:  # pragma: no cover - a new exporter needs its own count here
        raise AssertionError(f"no independent count for exporter {m.exporter}")
    return n, n


def _assert_count(what: str, got: int, lo: int, hi: int) -> None:
    assert hi > 0, "the independent count found no parameters: the manifest entry is wrong"
    assert got > 0, f"{what} is 0; the file has {hi:,} parameter values"
    assert lo <= got <= hi, f"{what} is {got:,}; expected {lo:,}..{hi:,} (see the module docstring)"


# --------------------------------------------------------------------------- tests

@pytest.mark.parametrize("m", PARAMS)
def test_open_and_param_count(m: RealModel) -> None:
    from slimline.core.models import open_model

    path = model_path(m)
    lo, hi = expected_range(m, path)
    handle = open_model(path)
    _assert_count("handle.param_count", handle.param_count, lo, hi)


@pytest.mark.parametrize("m", PARAMS)
def test_inventory_and_stats(m: RealModel) -> None:
    from slimline.core.models import open_model
    from slimline.core.stats import compute_stats, layer_inventory

    path = model_path(m)
    lo, hi = expected_range(m, path)
    handle = open_model(path)
    rows = layer_inventory(handle)
    assert rows, "the layer inventory is empty"
    in_rows = sum(r.params for r in rows if r.dtype not in _NON_PARAM_DTYPES and not r.dtype.startswith("int64")
                  and not r.name.endswith("num_batches_tracked"))
    _assert_count("the inventory's parameter total", in_rows, lo, hi)
    stats = compute_stats(handle)
    assert [r.name for r in stats] == [r.name for r in rows]
    for r in stats:  # a float tensor gets statistics unless it holds no finite value (e.g. a Clip bound of -inf)
        if r.dtype.startswith("float") and r.params > 0 and r.std is None:
            assert (r.nan_count or 0) + (r.inf_count or 0) == r.params, f"{r.name}: no statistics ({r})"


@pytest.mark.parametrize("m", PARAMS)
def test_cli_inspect(m: RealModel) -> None:
    path = model_path(m)
    lo, hi = expected_range(m, path)
    cmd = [sys.executable, "-m", "slimline.core.cli", "inspect", str(path)]
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    plain = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
    out = plain.stdout + plain.stderr
    assert "Traceback" not in out, out[-3000:]
    assert plain.returncode == 0, f"exit {plain.returncode}: {out[-1500:]}"
    js = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=600, env=env, check=False)
    assert "Traceback" not in js.stderr, js.stderr[-3000:]
    assert js.returncode == 0, f"exit {js.returncode}: {js.stderr[-1500:]}"
    doc = json.loads(js.stdout)
    _assert_count("`inspect --json` model.param_count", int(doc["model"]["param_count"]), lo, hi)
    assert doc["layers"], "`inspect --json` lists no layers"
