"""PyTorch files: TorchScript, torch.export (.pt2), checkpoints and pickled modules.

Safety rule: only ``torch.load(weights_only=True)`` (a restricted unpickler) runs
on untrusted files. A full pickled module or a ``.pt2`` (``torch.export.load``
unpickles internally) is refused with :class:`UntrustedFileError` unless the user
trusts it. ``.pt2`` weights and inputs are still listed from the archive's JSON
and raw tensor bytes, which needs no unpickling.
"""
from __future__ import annotations

import json
import pickletools
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimline.core.errors import ModelLoadError, UntrustedFileError
from slimline.core.handle import Capabilities, ModelHandle, TensorSpec
from slimline.core.models.handles import TRUST_HINT, require_trust, weights_handle
from slimline.core.models.tensors import (
    TensorEntry,
    WeightSource,
    cached,
    file_key,
    file_size,
    module_source,
    tensor_dict_source,
    tensor_kind,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

TORCHSCRIPT_REASON = ("TorchScript can be run, measured and converted to ONNX but not edited; "
                      "its input shape is not recorded in the file, so an input shape must be given")

# torch.export ScalarType enum (torch/_export/serde/schema.py) → (numpy storage, dtype name)
_PT2_DTYPES: dict[int, tuple[str, str]] = {
    1: ("uint8", "uint8"), 2: ("int8", "int8"), 3: ("int16", "int16"), 4: ("int32", "int32"),
    5: ("int64", "int64"), 6: ("float16", "float16"), 7: ("float32", "float32"), 8: ("float64", "float64"),
    12: ("bool", "bool"), 13: ("uint16", "bfloat16"), 28: ("uint16", "uint16"), 29: ("uint8", "float8_e4m3fn"),
    30: ("uint8", "float8_e5m2"), 34: ("uint32", "uint32"), 35: ("uint64", "uint64"),
}
_SAFE_GLOBAL_PREFIXES = ("torch._utils.", "collections.OrderedDict", "torch.", "builtins.set", "__builtin__.set",
                         "builtins.dict", "builtins.list", "builtins.tuple", "_codecs.encode", "numpy.")


def _err(path: Path, problem: str, hint: str) -> ModelLoadError:
    return ModelLoadError(problem, hint=hint, subject=str(path))


# --------------------------------------------------------------------------- pickle inspection (no execution)

def _pickle_bytes(path: Path) -> bytes:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            name = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
            return zf.read(name) if name else b""
    with path.open("rb") as fh:
        return fh.read(1 << 22)


def pickle_globals(path: Path) -> list[str]:
    """Classes/functions a pickle would import, read with pickletools (nothing is executed)."""
    found: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _pos in pickletools.genops(_pickle_bytes(path)):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(str(arg))
            elif op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # noqa: BLE001 - truncated streams: report what we saw
        pass
    return list(dict.fromkeys(found))


def _unsafe_globals(globs: list[str]) -> list[str]:
    out = []
    for g in globs:
        if g.startswith("torch.nn.") or not g.startswith(_SAFE_GLOBAL_PREFIXES):
            out.append(g)
    return out


def untrusted_pickle_error(path: Path, what: str = "a pickled Python object") -> UntrustedFileError:
    unsafe = _unsafe_globals(pickle_globals(path))
    refs = f" (it references {', '.join(unsafe[:4])}{'…' if len(unsafe) > 4 else ''})" if unsafe else ""
    return UntrustedFileError(
        f"this file is {what}{refs}; loading it runs code from the file, so Slimline will not load it "
        "without your permission", hint=f"Trust it {TRUST_HINT}", subject=str(path))


# --------------------------------------------------------------------------- checkpoints

def _flatten_tensors(obj: Any, prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    import torch

    out = {} if out is None else out
    if isinstance(obj, torch.Tensor):
        out[prefix or "tensor"] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten_tensors(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _flatten_tensors(v, f"{prefix}.{i}" if prefix else str(i), out)
    return out


def _weights_only_load(path: Path) -> Any:
    import pickle

    import torch

    try:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc).lower() or "weights only" in str(exc).lower():
            raise untrusted_pickle_error(path) from None
        raise _err(path, f"the checkpoint is corrupt or truncated ({str(exc).splitlines()[0][:200]})",
                   "get the file again or re-save it with torch.save(model.state_dict(), path)") from None
    except UntrustedFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many types on damaged archives
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise _err(path, f"the PyTorch checkpoint could not be read: it is corrupt or truncated ({first})",
                   "get the file again or re-save it with torch.save(model.state_dict(), path)") from None


# keys under which training scripts keep the model's weights, most specific first; the rest of such a
# checkpoint (optimizer moments, schedulers, step counters, EMA copies) is not the model
STATE_KEYS = ("model_state_dict", "model_state", "state_dict", "model", "net", "network", "module",
              "weights", "params", "generator", "ema_state_dict", "ema")


def _has_tensors(obj: Any) -> bool:
    return bool(_flatten_tensors(obj)) if isinstance(obj, dict) else False


def unwrap_checkpoint(obj: Any) -> tuple[Any, str | None, list[str]]:
    """(the model's tensors, the key they came from, top-level keys left out) of a loaded checkpoint.

    A bare state_dict passes through. A training checkpoint ``{"model_state": {...}, "optimizer_state":
    {...}, "step": 3}`` yields its model part; counting the optimizer's Adam moments as weights would
    triple the parameter count.
    """
    import torch

    if not isinstance(obj, dict) or any(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, None, []
    for key in STATE_KEYS:
        inner = obj.get(key)
        if _has_tensors(inner):
            inner, deeper, _ = unwrap_checkpoint(inner)  # {"model": {"state_dict": ...}}
            left = [str(k) for k in obj if k != key]
            return inner, key + (f".{deeper}" if deeper else ""), left
    return obj, None, []


def checkpoint_contents(path: Path) -> tuple[dict[str, "torch.Tensor"], str | None, list[str]]:
    """Tensors of a checkpoint (nested dicts flattened, the model part unwrapped), its key, what was left out."""
    def build() -> tuple[dict[str, Any], str | None, list[str]]:
        obj, key, left = unwrap_checkpoint(_weights_only_load(path))
        tensors = _flatten_tensors(obj)
        if not tensors:
            raise _err(path, "the checkpoint holds no tensors",
                       "save the model with torch.save(model.state_dict(), path)")
        return tensors, key, left

    return cached(file_key(path, "state_dict"), build)


def load_state_dict(path: Path) -> dict[str, "torch.Tensor"]:
    """Tensors of a checkpoint (nested dicts flattened; model_state/state_dict/model/... wrappers unwrapped)."""
    return checkpoint_contents(path)[0]


def _numel(shape: Any) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def open_checkpoint(path: Path, trust: bool) -> ModelHandle:
    """state_dict checkpoint (weights-only), or a pickled nn.Module when trusted."""
    try:
        tensors, key, left = checkpoint_contents(path)
    except UntrustedFileError:
        if not trust:
            raise
        return open_pickle_module(path)
    meta: dict[str, Any] = {}
    if key is not None:
        meta = {"state_key": key, "left_out": left}
    return weights_handle(path, "state_dict", tensor_dict_source(tensors).entries, "torch.save", meta=meta)


def load_pickle_module(path: Path) -> "torch.nn.Module":
    """Unpickle a full module. Only ever called after the user trusted the file."""
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise _err(path, f"the pickled model could not be loaded ({type(exc).__name__}: {first})",
                   "the classes it needs must be importable (install the package that defines the model), "
                   "or export the model to ONNX/TorchScript where it was trained") from None
    if not isinstance(obj, torch.nn.Module):
        raise _err(path, f"the pickle holds a {type(obj).__name__}, not a torch.nn.Module",
                   "save the model object itself or its state_dict")
    return obj.eval()


def open_pickle_module(path: Path) -> ModelHandle:
    module = cached(file_key(path, "pickle_module"), lambda: load_pickle_module(path))
    params = sum(p.numel() for p in module.parameters())
    return ModelHandle(
        path=str(path), format="pickle_module", family="torch", files=[str(path)], param_count=params,
        bytes_on_disk=file_size(path), producer=f"torch.save ({type(module).__name__})", trusted=True,
        capabilities=Capabilities(reason="pickled module: its input shape is not recorded in the file, "
                                         "so an input shape must be given to run or measure it"),
        meta={"class": f"{type(module).__module__}.{type(module).__qualname__}"},
    )


# --------------------------------------------------------------------------- TorchScript

def load_torchscript(path: Path, *, fresh: bool = False) -> "torch.jit.ScriptModule":
    """Load the archive; ``fresh=True`` bypasses the cache (callers that may modify the module)."""
    import torch

    def build() -> Any:
        try:
            return torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:  # noqa: BLE001
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise _err(path, f"the TorchScript archive could not be loaded: it is corrupt or truncated ({first})",
                       "get the file again or re-save it with torch.jit.save") from None

    return build() if fresh else cached(file_key(path, "torchscript"), build)


def open_torchscript(path: Path) -> ModelHandle:
    module = load_torchscript(path)
    params = sum(p.numel() for p in module.parameters())
    return ModelHandle(
        path=str(path), format="torchscript", family="torch", files=[str(path)], param_count=params,
        bytes_on_disk=file_size(path), producer="torch.jit", trusted=True,
        capabilities=Capabilities(run=True, compress=False, reason=TORCHSCRIPT_REASON),
        meta={"class": str(getattr(module, "original_name", type(module).__name__))},
    )


# --------------------------------------------------------------------------- torch.export .pt2

def _pt2_prefix(names: list[str]) -> str:
    for n in names:
        if n.endswith("archive_format"):
            return n[: -len("archive_format")]
    return ""


def _pt2_json(zf: zipfile.ZipFile, prefix: str, member: str) -> Any:
    try:
        return json.loads(zf.read(prefix + member))
    except KeyError:
        return None


def _pt2_sizes(meta: dict[str, Any], dim_names: dict[str, str]) -> list[int | str]:
    out: list[int | str] = []
    for i, s in enumerate(meta.get("sizes", [])):
        if "as_int" in s:
            out.append(int(s["as_int"]))
        else:
            expr = str((s.get("as_expr") or {}).get("expr_str", f"d{i}"))
            out.append(dim_names.setdefault(expr, "batch" if i == 0 and "batch" not in dim_names.values() else expr))
    return out


def pt2_listing(path: Path) -> dict[str, Any]:
    """Weights (name → member, dtype, shape) and user inputs/outputs from the archive's JSON."""
    def build() -> dict[str, Any]:
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                prefix = _pt2_prefix(names)
                wconf = _pt2_json(zf, prefix, "data/weights/model_weights_config.json") or {}
                model = _pt2_json(zf, prefix, "models/model.json") or {}
                infos = {i.filename: i for i in zf.infolist()}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise _err(path, f"the .pt2 archive is corrupt or truncated ({exc})", "get the file again") from None
        weights = {}
        for name, w in (wconf.get("config") or {}).items():
            tm = w.get("tensor_meta") or {}
            member = prefix + "data/weights/" + str(w.get("path_name", ""))
            if w.get("use_pickle") or tm.get("dtype") not in _PT2_DTYPES or member not in infos:
                continue
            shape = [int(s.get("as_int", 0)) for s in tm.get("sizes", [])]
            strides = [int(s.get("as_int", 0)) for s in tm.get("strides", [])]
            offset = int((tm.get("storage_offset") or {}).get("as_int", 0))
            weights[name] = {"member": member, "dtype": tm["dtype"], "shape": shape, "strides": strides,
                             "offset": offset, "stored": infos[member].compress_type == zipfile.ZIP_STORED}
        gm = model.get("graph_module") or {}
        graph = gm.get("graph") or {}
        tvals = graph.get("tensor_values") or {}
        sig = gm.get("signature") or {}
        dim_names: dict[str, str] = {}
        inputs, outputs = [], []
        for spec in sig.get("input_specs", []):
            arg = ((spec.get("user_input") or {}).get("arg") or {}).get("as_tensor")
            if arg and arg.get("name") in tvals:
                tm = tvals[arg["name"]]
                dt = _PT2_DTYPES.get(tm.get("dtype"), ("", "unknown"))[1]
                inputs.append(TensorSpec(name=arg["name"], dtype=dt, shape=_pt2_sizes(tm, dim_names)))
        for spec in sig.get("output_specs", []):
            arg = ((spec.get("user_output") or {}).get("arg") or {}).get("as_tensor")
            if arg and arg.get("name") in tvals:
                tm = tvals[arg["name"]]
                dt = _PT2_DTYPES.get(tm.get("dtype"), ("", "unknown"))[1]
                outputs.append(TensorSpec(name=arg["name"], dtype=dt, shape=_pt2_sizes(tm, dim_names)))
        return {"weights": weights, "inputs": inputs, "outputs": outputs,
                "torch_version": str(model.get("torch_version", "")), "readable": bool(wconf)}

    return cached(file_key(path, "pt2-listing"), build)


def pt2_weight_source(path: Path) -> WeightSource:
    """Raw tensor bytes from the .pt2 zip (no unpickling); op types are not recorded."""
    import numpy as np

    listing = pt2_listing(path)
    entries = []
    for name, w in listing["weights"].items():
        layer = name.rsplit(".", 1)[0] if "." in name else ""
        dtype = _PT2_DTYPES[w["dtype"]][1]
        entries.append(TensorEntry(name, layer, "", w["shape"], dtype, kind=tensor_kind(dtype, _numel(w["shape"]))))

    def load(name: str) -> np.ndarray:
        w = listing["weights"][name]
        with zipfile.ZipFile(path) as zf:
            raw = zf.read(w["member"])
        dt = np.dtype(_PT2_DTYPES[w["dtype"]][0])
        flat = np.frombuffer(raw[: len(raw) - len(raw) % dt.itemsize], dtype=dt)
        # the JSON is untrusted: never let shape/strides/offset reach outside the member's bytes
        shape, strides = w["shape"], w["strides"] or _contiguous_strides(w["shape"])
        if (any(d < 0 for d in shape) or any(s < 0 for s in strides) or len(strides) != len(shape)
                or w["offset"] < 0 or (0 not in shape and w["offset"] + sum((d - 1) * s for d, s in zip(shape, strides))
                                       >= flat.size)):
            raise _err(path, f"weight {name!r}: its shape {shape}, strides {strides} and offset {w['offset']} "
                       f"reach beyond the {flat.size} values stored in {w['member']!r} (the archive is corrupt)",
                       "get the file again or re-export it with torch.export.save")
        if not w["shape"]:
            return flat[w["offset"]:w["offset"] + 1].reshape(())
        return np.lib.stride_tricks.as_strided(flat[w["offset"]:], shape=shape,
                                               strides=[s * dt.itemsize for s in strides],
                                               writeable=False)

    note = "" if listing["readable"] else \
        "this .pt2 keeps its weights pickled: they can be listed only after trusting it"
    return WeightSource(entries, load, note=note)


def _contiguous_strides(shape: list[int]) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= max(int(d), 1)
    return out[::-1]


def load_pt2_module(path: Path, *, fresh: bool = False) -> "torch.nn.Module":
    """torch.export.load unpickles: only after the user trusted the file."""
    import torch

    def build() -> Any:
        try:
            return torch.export.load(str(path)).module()
        except Exception as exc:  # noqa: BLE001
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise _err(path, f"the torch.export archive could not be loaded ({first})",
                       "re-save it with torch.export.save using this torch version, or export to ONNX") from None

    return build() if fresh else cached(file_key(path, "pt2-module"), build)


def open_pt2(path: Path, trust: bool) -> ModelHandle:
    listing = pt2_listing(path)
    if not trust:
        n = len(listing["weights"])
        what = (f"a torch.export program; its {n} weight tensors can be inspected, but " if listing["readable"]
                else "a torch.export program; ")
        raise UntrustedFileError(
            f"{what}loading the program unpickles data from the file, which can run code, so Slimline "
            "will not load it without your permission", hint=f"Trust it {TRUST_HINT}", subject=str(path))
    module = load_pt2_module(path)
    params = sum(int(p.numel()) for p in module.parameters()) or sum(
        _numel(w["shape"]) for w in listing["weights"].values())
    dims = {d: 1 for s in listing["inputs"] for d in s.shape if isinstance(d, str)}
    return ModelHandle(
        path=str(path), format="torch_export", family="torch", files=[str(path)], inputs=listing["inputs"],
        outputs=listing["outputs"], dim_defaults=dims, param_count=params, bytes_on_disk=file_size(path),
        producer=f"torch.export {listing['torch_version']}".strip(), trusted=True,
        capabilities=Capabilities(run=True, compress=False,
                                  reason="a torch.export program can be run, measured and converted to ONNX "
                                         "but not edited; compress the original model instead"),
    )


def pt2_weights_listing_handle(path: Path) -> ModelHandle:
    """A weights-only view of an untrusted .pt2 (nothing unpickled)."""
    src = pt2_weight_source(path)
    listing = pt2_listing(path)
    h = weights_handle(path, "torch_export", src.entries, f"torch.export {listing['torch_version']}".strip())
    return h.model_copy(update={"inputs": listing["inputs"], "outputs": listing["outputs"], "trusted": False})


# --------------------------------------------------------------------------- format table entries
# Uniform signatures for slimline.core.models.formats: open(path, trust), weights/runnable/eager(handle).

def torchscript_open(path: Path, trust: bool) -> ModelHandle:
    del trust  # torch.jit.load does not unpickle arbitrary classes
    return open_torchscript(path)


def torchscript_runnable(handle: ModelHandle) -> "torch.nn.Module":
    return load_torchscript(Path(handle.path), fresh=True)


def torchscript_weights(handle: ModelHandle) -> WeightSource:
    return module_source(torchscript_runnable(handle))


def pt2_open(path: Path, trust: bool) -> ModelHandle:
    """The program when trusted; otherwise UntrustedFileError carrying a weights-only ``handle``."""
    try:
        return open_pt2(path, trust)
    except UntrustedFileError as exc:
        # let callers show the weights while they ask the user (nothing was unpickled)
        exc.handle = pt2_weights_listing_handle(path)  # type: ignore[attr-defined]
        raise


def pt2_runnable(handle: ModelHandle) -> "torch.nn.Module":
    require_trust(handle)
    return load_pt2_module(Path(handle.path), fresh=True)


def pt2_weights(handle: ModelHandle) -> WeightSource:
    return pt2_weight_source(Path(handle.path))


def checkpoint_open(path: Path, trust: bool) -> ModelHandle:
    return open_checkpoint(path, trust)


def state_dict_weights(handle: ModelHandle) -> WeightSource:
    return tensor_dict_source(load_state_dict(Path(handle.path)))


def pickle_module_eager(handle: ModelHandle) -> "torch.nn.Module":
    require_trust(handle)
    return load_pickle_module(Path(handle.path))


def pickle_module_weights(handle: ModelHandle) -> WeightSource:
    return module_source(pickle_module_eager(handle))


def pickle_module_to_archive(handle: ModelHandle, out: Path) -> ModelHandle:
    """A Slimline archive of a trusted pickled module (it then reloads without pickle)."""
    from slimline.core.torchmodel import save_torch_module

    module = pickle_module_eager(handle)
    try:
        return save_torch_module(module, out, inputs=handle.inputs, outputs=handle.outputs,
                                 extra_meta={"source_format": "pickle_module", "source": Path(handle.path).name})
    except ModelLoadError as exc:
        raise ModelLoadError(f"cannot convert to a Slimline archive: {exc.message}", subject=handle.path,
                             hint=exc.hint) from None
