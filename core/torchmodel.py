"""Slimline torch archive: architecture spec + safetensors, reloadable without pickle.

Torch models move between steps in this form. One ``.safetensors`` file holds
the weights; its string metadata holds:

- ``slimline.format``: ``"slimline_torch/1"``
- ``slimline.arch``: JSON ``{"base": {...}, "replacements": {path: tree}}`` where base is
  ``{"kind": "spec", "tree": <module tree>}`` (standard layers only) or
  ``{"kind": "hf", "config": {...}, "auto_class": "AutoModelFor..."}``
- ``slimline.inputs`` / ``slimline.outputs``: JSON lists of TensorSpec dicts

Rebuilding = build the base, apply replacements (e.g. low-rank Linear → Sequential),
then re-create every supported leaf whose saved tensors changed shape (structured
pruning), and load the state dict strictly. No code from the file is executed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimline.core.errors import ModelLoadError
from slimline.core.handle import ModelHandle, TensorSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

FORMAT_TAG = "slimline_torch/1"

# Leaf types and the constructor arguments read back from a live module.
_LEAF_ARGS: dict[str, tuple[str, ...]] = {
    "Conv1d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
               "padding_mode"),
    "Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
               "padding_mode"),
    "Linear": ("in_features", "out_features", "bias"),
    "BatchNorm1d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "BatchNorm2d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "LayerNorm": ("normalized_shape", "eps", "elementwise_affine"),
    "Embedding": ("num_embeddings", "embedding_dim", "padding_idx"),
    "ReLU": (), "ReLU6": (), "GELU": ("approximate",), "SiLU": (), "Tanh": (), "Sigmoid": (),
    "Identity": (), "Dropout": ("p",), "Softmax": ("dim",),
    "MaxPool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    "AvgPool2d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
    "AdaptiveAvgPool2d": ("output_size",), "AdaptiveAvgPool1d": ("output_size",),
    "Flatten": ("start_dim", "end_dim"),
}
_CONTAINERS = ("Sequential",)


def _json_arg(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "dim") and hasattr(value, "shape"):  # bias tensor → bool
        return True
    return value


def module_to_tree(module: "torch.nn.Module") -> dict[str, Any]:
    """Describe a module built only from standard layers; raise if it has custom code."""
    kind = type(module).__name__
    if type(module).__module__.startswith("torch.nn") and kind in _CONTAINERS:
        return {"type": kind, "children": {n: module_to_tree(c) for n, c in module.named_children()}}
    if type(module).__module__.startswith("torch.nn") and kind in _LEAF_ARGS:
        args = {}
        for a in _LEAF_ARGS[kind]:
            v = getattr(module, a, None)
            if a == "bias":
                v = module.bias is not None
            elif a == "affine" and kind.startswith("BatchNorm"):
                v = module.affine
            args[a] = _json_arg(v)
        return {"type": kind, "args": args}
    raise ModelLoadError(
        f"layer type {type(module).__module__}.{kind} has custom forward code",
        hint="Slimline can rebuild standard layers only; export the model to ONNX or TorchScript instead")


def tree_to_module(tree: dict[str, Any]) -> "torch.nn.Module":
    import torch.nn as nn

    kind = tree.get("type")
    if kind in _CONTAINERS:
        seq = nn.Sequential()
        for name, child in tree.get("children", {}).items():
            seq.add_module(name, tree_to_module(child))
        return seq
    if kind not in _LEAF_ARGS:
        raise ModelLoadError(f"unknown layer type {kind!r} in architecture spec")
    args = dict(tree.get("args", {}))
    for k, v in list(args.items()):
        if isinstance(v, list) and k != "normalized_shape":
            args[k] = tuple(v)
    return getattr(nn, kind)(**args)


def _get_submodule(root: "torch.nn.Module", path: str) -> "torch.nn.Module":
    return root.get_submodule(path) if path else root


def _set_submodule(root: "torch.nn.Module", path: str, new: "torch.nn.Module") -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(_get_submodule(root, parent_path), name, new)


def _rebuild_leaves(root: "torch.nn.Module", state: dict[str, "torch.Tensor"]) -> None:
    """Re-create leaves whose saved weights have other shapes (structured pruning)."""
    for path, mod in list(root.named_modules()):
        kind = type(mod).__name__
        if not path or kind not in _LEAF_ARGS:
            continue
        w = state.get(f"{path}.weight")
        if kind in ("Conv1d", "Conv2d") and w is not None and tuple(w.shape) != tuple(mod.weight.shape):
            tree = module_to_tree(mod)
            tree["args"]["out_channels"] = int(w.shape[0])
            tree["args"]["in_channels"] = int(w.shape[1]) * mod.groups
            _set_submodule(root, path, tree_to_module(tree))
        elif kind == "Linear" and w is not None and tuple(w.shape) != tuple(mod.weight.shape):
            tree = module_to_tree(mod)
            tree["args"].update(out_features=int(w.shape[0]), in_features=int(w.shape[1]))
            _set_submodule(root, path, tree_to_module(tree))
        elif kind.startswith("BatchNorm"):
            rm = state.get(f"{path}.running_mean", w)
            if rm is not None and rm.shape[0] != mod.num_features:
                tree = module_to_tree(mod)
                tree["args"]["num_features"] = int(rm.shape[0])
                _set_submodule(root, path, tree_to_module(tree))
        elif kind == "LayerNorm" and w is not None and tuple(w.shape) != tuple(mod.normalized_shape):
            tree = module_to_tree(mod)
            tree["args"]["normalized_shape"] = list(w.shape)
            _set_submodule(root, path, tree_to_module(tree))
        elif kind == "Embedding" and w is not None and tuple(w.shape) != tuple(mod.weight.shape):
            tree = module_to_tree(mod)
            tree["args"].update(num_embeddings=int(w.shape[0]), embedding_dim=int(w.shape[1]))
            _set_submodule(root, path, tree_to_module(tree))


def build_base(base: dict[str, Any]) -> "torch.nn.Module":
    kind = base.get("kind")
    if kind == "spec":
        return tree_to_module(base["tree"])
    if kind == "hf":
        try:
            import transformers
        except ImportError:
            raise ModelLoadError("this model needs the 'transformers' package",
                                 hint="pip install 'slimline[hf]'") from None
        config = transformers.AutoConfig.for_model(**base["config"])
        auto = getattr(transformers, base.get("auto_class") or "AutoModel")
        return auto.from_config(config)
    raise ModelLoadError(f"unknown architecture base kind {kind!r}")


def save_torch_module(
    module: "torch.nn.Module",
    path: str | Path,
    *,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec] | None = None,
    base: dict[str, Any] | None = None,
    replacements: dict[str, dict[str, Any]] | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> ModelHandle:
    """Write ``module`` as a Slimline torch archive (atomic) and return its handle.

    ``base`` defaults to a spec tree of ``module`` itself (standard layers only);
    for HF models pass the original base plus ``replacements`` for swapped modules.
    """
    from safetensors.torch import save_file

    from slimline.core.fsutil import atomic_path

    if base is None:
        base = {"kind": "spec", "tree": module_to_tree(module)}
    arch = {"base": base, "replacements": replacements or {}}
    state, tied = _untied_state(module)
    meta = {
        "slimline.format": FORMAT_TAG,
        "slimline.arch": json.dumps(arch),
        "slimline.inputs": json.dumps([s.model_dump() for s in inputs]),
        "slimline.outputs": json.dumps([s.model_dump() for s in (outputs or [])]),
        "slimline.extra": json.dumps(extra_meta or {}),
    }
    if tied:
        meta["slimline.tied"] = json.dumps(tied)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return handle_for_archive(path)


def _untied_state(module: "torch.nn.Module") -> tuple[dict[str, "torch.Tensor"], dict[str, str]]:
    """(tensors to store, {alias: stored key}): a tied tensor (LM head = embedding) is stored once.

    safetensors refuses shared storage; cloning the alias instead would store a language model's
    tied embedding twice (a 135M model: +28M parameters, a *bigger* file after pruning). Views that
    only overlap (other shape or strides) are still cloned.
    """
    state: dict[str, "torch.Tensor"] = {}
    tied: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    ptrs: set[int] = set()
    for k, v in module.state_dict().items():
        t = v.detach()
        ident = (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype, t.device.type)
        if t.numel() and ident in seen:
            tied[k] = seen[ident]
            continue
        if t.numel() and t.data_ptr() in ptrs:
            t = t.clone()
        elif t.numel():
            seen[ident] = k
            ptrs.add(t.data_ptr())
        state[k] = t.contiguous().cpu()
    return state, tied


def _retie(module: "torch.nn.Module", tied: dict[str, str]) -> None:
    """Make each alias the very parameter it was saved as (a plain spec tree does not tie by itself)."""
    import torch

    params = dict(module.named_parameters(remove_duplicate=False))
    for alias, src in tied.items():
        a, b = params.get(alias), params.get(src)
        if isinstance(a, torch.nn.Parameter) and isinstance(b, torch.nn.Parameter) and a is not b \
                and a.shape == b.shape:
            owner, _, leaf = alias.rpartition(".")
            setattr(_get_submodule(module, owner), leaf, b)


def read_archive_meta(path: str | Path) -> dict[str, Any] | None:
    """Metadata of a Slimline archive, or None when the file is a plain safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
    if meta.get("slimline.format") != FORMAT_TAG:
        return None
    return {
        "arch": json.loads(meta["slimline.arch"]),
        "inputs": [TensorSpec(**d) for d in json.loads(meta.get("slimline.inputs", "[]"))],
        "outputs": [TensorSpec(**d) for d in json.loads(meta.get("slimline.outputs", "[]"))],
        "extra": json.loads(meta.get("slimline.extra", "{}")),
        "tied": json.loads(meta.get("slimline.tied", "{}")),
    }


def handle_for_archive(path: str | Path) -> ModelHandle:
    from safetensors import safe_open

    path = Path(path)
    meta = read_archive_meta(path)
    if meta is None:
        raise ModelLoadError("not a Slimline torch archive", subject=str(path))
    params = 0
    with safe_open(str(path), framework="numpy") as f:
        for k in f.keys():
            if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
                continue
            n = 1
            for d in f.get_slice(k).get_shape():
                n *= d
            params += n
    dims = {d: 1 for s in meta["inputs"] for d in s.shape if isinstance(d, str)}
    return ModelHandle(
        path=str(path), format="slimline_torch", family="torch", files=[str(path)],
        inputs=meta["inputs"], outputs=meta["outputs"], dim_defaults=dims,
        param_count=params, bytes_on_disk=path.stat().st_size, producer="slimline",
        trusted=True, meta={"arch_kind": meta["arch"]["base"].get("kind"), **meta["extra"]},
    )


def load_torch_module(path: str | Path | ModelHandle) -> "torch.nn.Module":
    """Rebuild the module from a Slimline archive (no pickle) in eval mode."""
    from safetensors.torch import load_file

    if isinstance(path, ModelHandle):
        path = path.path
    meta = read_archive_meta(path)
    if meta is None:
        raise ModelLoadError("not a Slimline torch archive", subject=str(path))
    arch = meta["arch"]
    module = build_base(arch["base"])
    for sub_path, tree in arch.get("replacements", {}).items():
        _set_submodule(module, sub_path, tree_to_module(tree))
    state = load_file(str(path))
    tied = {a: s for a, s in meta.get("tied", {}).items() if s in state and a not in state}
    for alias, src in tied.items():
        state[alias] = state[src]
    _rebuild_leaves(module, state)
    missing, unexpected = module.load_state_dict(state, strict=False)
    _retie(module, tied)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ModelLoadError(
            f"weights do not fit the architecture (missing {missing[:3]}, unexpected {unexpected[:3]})",
            subject=str(path), hint="the archive is damaged or was edited by hand")
    return module.eval()
