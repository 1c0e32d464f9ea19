"""Unstructured and N:M magnitude pruning of torch models and ONNX initializers.

Zeroing weights keeps every tensor dense: the file is the same size and dense
kernels still multiply the zeros, so neither bytes nor latency drop. What does drop
is the compressed size (zip/zstd of the file), which is what this step reports,
plus a per-layer sparsity table. For real speed use structured pruning.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from slimline.core.errors import StepFailed
from slimline.core.handle import ModelHandle
from slimline.core.plugin import Plugin, PluginParams, Problem, StepContext, StepOutput
from slimline.plugins._shared import common, onnxio
from slimline.plugins._shared.layers import layer_patterns, matches_any, selection_problems
from slimline.plugins.prune.sparsity import MaskResult, WeightSlot, nm_masks, unstructured_masks

_SPEC_PRUNABLE = {"Linear", "Conv1d", "Conv2d"}


class MagnitudeParams(PluginParams):
    target: Literal["sparsity", "threshold"] = Field(
        "sparsity", description="Prune to a target fraction of zeros, or zero every |w| below a threshold")
    sparsity: float = Field(0.5, ge=0.0, le=0.99, description="Fraction of weights to zero (target='sparsity')")
    threshold: float = Field(0.0, ge=0.0, le=1e6, description="Zero weights with |w| below this (target='threshold')")
    scope: Literal["layer", "global"] = Field(
        "layer", description="'layer': each layer gets the target sparsity; 'global': one cut over all layers")
    criterion: Literal["l1", "random"] = Field(
        "l1", description="'l1': smallest magnitudes go; 'random': seeded random weights go (a baseline)")
    pattern: Literal["unstructured", "n:m"] = Field(
        "unstructured", description="'n:m': in each run of m input weights keep the n largest (2:4 sparse kernels)")
    m: int = Field(4, ge=2, le=32, description="Group length for the n:m pattern")
    n: int = Field(2, ge=1, le=31, description="Weights kept per group of m (n:m pattern)")
    skip: list[str] = layer_patterns("Layer names or glob patterns to leave dense "
                                     "(biases and norms are always left alone)")
    overrides: dict[str, float] = Field(
        default_factory=dict, description="Per-layer sparsity, name or glob → fraction of zeros in [0, 0.99] "
        "(unstructured, target 'sparsity' only); layers not listed get 'sparsity'. Written by the budgeted "
        "search and the sensitivity view")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed for criterion='random'")

    @field_validator("n")
    @classmethod
    def _n_below_m(cls, v: int, info: Any) -> int:
        m = info.data.get("m")
        if m is not None and v >= m:
            raise ValueError(f"n ({v}) must be smaller than m ({m}); 2:4 keeps 2 of every 4")
        return v

    @field_validator("overrides")
    @classmethod
    def _check_overrides(cls, v: dict[str, float]) -> dict[str, float]:
        for name, value in v.items():
            if isinstance(value, bool) or not 0.0 <= float(value) <= 0.99:
                raise ValueError(f"overrides[{name!r}]: sparsity must be in [0, 0.99], got {value}")
        return v

    @model_validator(mode="after")
    def _overrides_need_sparsity(self) -> "MagnitudeParams":
        if self.overrides and (self.pattern != "unstructured" or self.target != "sparsity"):
            raise ValueError("overrides: per-layer sparsity needs pattern 'unstructured' and target 'sparsity'")
        return self

    @model_validator(mode="after")
    def _random_needs_target(self) -> "MagnitudeParams":
        if self.criterion == "random" and self.target == "threshold" and self.pattern == "unstructured":
            raise ValueError("criterion: 'random' has no magnitude to compare with a threshold; "
                             "use target='sparsity'")
        return self


class MagnitudePrune(Plugin):
    """Zero small weights (unstructured or N:M); reports sparsity and compressed size honestly."""

    id: ClassVar[str] = "builtin.prune_magnitude"
    version: ClassVar[str] = "1"
    title: ClassVar[str] = "Magnitude prune (unstructured / N:M)"
    category: ClassVar[str] = "prune"  # type: ignore[assignment]
    description: ClassVar[str] = (
        "Zeroes the smallest weights of Conv/Linear layers (per layer or globally, by target sparsity or "
        "threshold; random baseline; optional 2:4 pattern). The file keeps its size and dense latency does not "
        "drop; the zip-compressed size does. Use structured pruning for speed.")
    input_formats: ClassVar[tuple[str, ...]] = ("torch", "onnx")  # type: ignore[assignment]
    output_format: ClassVar[str] = "torch"  # type: ignore[assignment]
    preserves_format: ClassVar[bool] = True
    Params: ClassVar[type[PluginParams]] = MagnitudeParams

    # --- pre-flight ---------------------------------------------------------------------
    # The parameter that leaves layers alone (slimline.core.sensitivity: click-to-exclude, the search).
    exclusion_field: ClassVar[str] = "skip"

    def layerwise(self, model: ModelHandle, params: PluginParams, ctx: StepContext) -> Any:
        """This step one layer at a time (slimline.core.sensitivity.protocol.Layerwise)."""
        from slimline.plugins.prune.layerwise import MagnitudeLayerwise

        return MagnitudeLayerwise(self, model, params, ctx)

    def check(self, model: ModelHandle, params: PluginParams) -> list[Problem]:
        problems = self.check_format(model)
        if problems:
            return problems
        if model.family == "torch":
            skip = params.skip if isinstance(params, MagnitudeParams) else []
            problems += selection_problems(
                model, _SPEC_PRUNABLE, skip, none_found=Problem("no Conv or Linear layers to prune"),
                all_excluded=Problem("the skip list covers every prunable layer", field="skip",
                                     fix="remove some names from the skip list"))
        return problems

    # --- run ------------------------------------------------------------------------------
    def run(self, model: ModelHandle, params: PluginParams, ctx: StepContext) -> StepOutput:
        assert isinstance(params, MagnitudeParams)
        ctx.cancel.raise_if_cancelled()
        if model.family == "onnx":
            return self._run_onnx(model, params, ctx)
        if model.family == "torch":
            return self._run_torch(model, params, ctx)
        raise StepFailed(f"cannot prune a {model.family} model", subject=self.id,
                         hint="open a runnable torch or ONNX model")

    def _masks(self, slots: list[WeightSlot], p: MagnitudeParams,
               node_names: dict[str, str] | None = None) -> MaskResult:
        if p.pattern == "n:m":
            return nm_masks(slots, n=p.n, m=p.m, criterion=p.criterion, seed=p.seed)
        thr = p.threshold if p.target == "threshold" else None
        if not p.overrides:
            return unstructured_masks(slots, sparsity=p.sparsity, scope=p.scope, criterion=p.criterion,
                                      seed=p.seed, threshold=thr)
        return _masks_with_overrides(slots, p, node_names or {})

    def _run_torch(self, model: ModelHandle, p: MagnitudeParams, ctx: StepContext) -> StepOutput:
        import torch

        ctx.progress(0.0, "loading model")
        module = common.load_module(model)
        slots, mods, skipped = [], {}, {}
        tied = _tied_weights(module)
        for name, mod in module.named_modules():
            in_axis = _torch_in_axis(mod)
            if in_axis is None:
                continue
            if matches_any(name, p.skip) or matches_any(f"{name}.weight", p.skip):
                skipped[name] = "in skip list"
                continue
            others = [n for n in tied.get(id(mod.weight), []) if n != f"{name}.weight"]
            if others:  # a language model's LM head tied to its input embedding
                skipped[name] = (f"weight tied to {others[0]}: left dense (pruning it would zero the embedding "
                                 "too); the tie and the file size are kept")
                continue
            slots.append(WeightSlot(name, type(mod).__name__, mod.weight.detach().cpu().numpy(), in_axis))
            mods[name] = mod
        if not slots:
            raise StepFailed("no Conv or Linear weights left to prune", subject=f"{self.id}.skip",
                             hint="check the skip list, or use a model with Conv/Linear layers")
        before = {s.name: float((s.array == 0).mean()) for s in slots}
        res = self._masks(slots, p, {s.name: f"{s.name}.weight" for s in slots})
        with torch.no_grad():
            for i, s in enumerate(slots):
                ctx.cancel.raise_if_cancelled()
                ctx.progress(0.1 + 0.7 * i / len(slots), f"pruning {s.name}")
                if s.name in res.keep:
                    w = mods[s.name].weight
                    w.mul_(torch.from_numpy(res.keep[s.name]).to(device=w.device, dtype=w.dtype))
                    s.array = w.detach().cpu().numpy()
        ctx.cancel.raise_if_cancelled()
        ctx.progress(0.85, "saving")
        out = common.save_module(module, model, ctx.output_path("pruned.safetensors"))
        return self._report(model, out, slots, res, before, {**skipped, **res.skipped}, p, ctx)

    def _run_onnx(self, model: ModelHandle, p: MagnitudeParams, ctx: StepContext) -> StepOutput:
        from onnx import numpy_helper

        ctx.progress(0.0, "loading model")
        proto = onnxio.load_onnx_model(model)
        external = onnxio.uses_external_data(proto)
        inits = onnxio.initializer_map(proto)
        slots: list[WeightSlot] = []
        skipped: dict[str, str] = {}
        seen: set[str] = set()
        node_names: dict[str, str] = {}
        for node in proto.graph.node:
            found = _onnx_weight(node, inits)
            if found is None or found[0] in seen:
                continue
            wname, in_axis = found
            seen.add(wname)
            if matches_any(wname, p.skip) or (node.name and matches_any(node.name, p.skip)):
                skipped[wname] = "in skip list"
                continue
            arr = numpy_helper.to_array(inits[wname])
            if arr.dtype.kind != "f":
                skipped[wname] = f"{arr.dtype} weights (already quantized?)"
                continue
            slots.append(WeightSlot(wname, node.op_type, np.array(arr), in_axis))
            node_names[wname] = node.name
        if not slots:
            raise StepFailed("no float Conv/Gemm/MatMul weights left to prune", subject=f"{self.id}.skip",
                             hint="check the skip list, or prune before quantizing")
        before = {s.name: float((s.array == 0).mean()) for s in slots}
        res = self._masks(slots, p, node_names)
        for i, s in enumerate(slots):
            ctx.cancel.raise_if_cancelled()
            ctx.progress(0.1 + 0.7 * i / len(slots), f"pruning {s.name}")
            if s.name in res.keep:
                s.array = np.where(res.keep[s.name], s.array, np.zeros((), s.array.dtype)).astype(s.array.dtype)
                inits[s.name].CopyFrom(numpy_helper.from_array(s.array, s.name))
        ctx.cancel.raise_if_cancelled()
        ctx.progress(0.85, "saving")
        path = ctx.output_path("pruned.onnx")
        files = onnxio.save_onnx_model(proto, path, external=external)
        out = onnxio.onnx_output_handle(path, files, model, proto)
        return self._report(model, out, slots, res, before, {**skipped, **res.skipped}, p, ctx)

    # --- report ---------------------------------------------------------------------------
    def _report(self, src: ModelHandle, out: ModelHandle, slots: list[WeightSlot], res: MaskResult,
                before: dict[str, float], skipped: dict[str, str], p: MagnitudeParams,
                ctx: StepContext) -> StepOutput:
        ctx.progress(0.9, "measuring compressed size")
        rows: list[dict[str, Any]] = []
        zeros = total = 0
        for s in slots:
            z = int((s.array == 0).sum())
            pruned = s.name in res.keep
            if pruned:
                zeros += z
                total += s.array.size
            thr = res.threshold.get(s.name, float("nan"))
            rows.append({"layer": s.name, "op": s.op, "shape": list(s.array.shape), "params": int(s.array.size),
                         "sparsity_before": round(before[s.name], 4), "sparsity": round(z / s.array.size, 4),
                         "threshold": None if thr != thr else round(thr, 6),
                         "status": "pruned" if pruned else "skipped", "reason": skipped.get(s.name, "")})
        for name, why in skipped.items():
            if not any(r["layer"] == name for r in rows):
                rows.append({"layer": name, "op": "", "shape": [], "params": 0, "sparsity_before": None,
                             "sparsity": None, "threshold": None, "status": "skipped", "reason": why})
        in_files, out_files = common.model_files(src), common.model_files(out)
        bytes_in, bytes_out = common.files_bytes(in_files), common.files_bytes(out_files)
        zip_in, zip_out = common.zip_bytes(in_files), common.zip_bytes(out_files)
        sparsity = zeros / total if total else 0.0
        metrics = {
            "sparsity": sparsity, "bytes": float(bytes_out), "bytes_before": float(bytes_in),
            "zip_bytes": float(zip_out), "zip_bytes_before": float(zip_in),
            "zip_ratio": zip_out / bytes_out if bytes_out else 1.0,
            "layers_pruned": float(len(res.keep)), "layers_skipped": float(len(skipped)),
        }
        how = (f"{p.n}:{p.m} pattern" if p.pattern == "n:m"
               else f"|w| < {p.threshold:g}" if p.target == "threshold"
               else f"{p.scope} {p.sparsity:.0%} target"
               + (f", {len(p.overrides)} per-layer override(s)" if p.overrides else ""))
        notes = [
            f"{sparsity:.1%} of the weights in {len(res.keep)} Conv/Linear layers are zero "
            f"({how}, criterion {p.criterion}); biases and norms untouched.",
            f"File size unchanged: {bytes_in:,} → {bytes_out:,} bytes (zeros are still stored densely). "
            f"Zip-compressed (zlib level 6): {zip_in:,} → {zip_out:,} bytes "
            f"({zip_out / zip_in if zip_in else 1:.2f}× the compressed input, {metrics['zip_ratio']:.2f}× the file).",
            "Dense latency does not drop: CPU/GPU dense kernels multiply the zeros too. For speed use "
            "structured pruning (builtin.prune_structured), which removes whole channels"
            + (", or run 2:4 on hardware with sparse tensor cores." if p.pattern == "n:m" else "."),
            "Accuracy usually drops after pruning; fine-tune or distill to recover it.",
        ]
        warnings = []
        if skipped:
            warnings.append(f"{len(skipped)} layer(s) left dense: "
                            + "; ".join(f"{k} ({v})" for k, v in list(skipped.items())[:5])
                            + (" …" if len(skipped) > 5 else ""))
        if total and sparsity < 1e-6:
            warnings.append("no weight was zeroed: raise the sparsity or the threshold")
        ctx.progress(1.0, "done")
        return StepOutput(model=out, metrics=metrics, notes=notes, warnings=warnings, tables={"sparsity": rows})


def layer_sparsity(name: str, p: MagnitudeParams, node_name: str = "") -> float | None:
    """The per-layer sparsity ``overrides`` gives ``name`` (a module, weight or node name), else None."""
    for key in (name, node_name):
        if key and key in p.overrides:
            return float(p.overrides[key])
    for pattern, value in p.overrides.items():
        if matches_any(name, [pattern]) or (node_name and matches_any(node_name, [pattern])):
            return float(value)
    return None


def _masks_with_overrides(slots: list[WeightSlot], p: MagnitudeParams, node_names: dict[str, str]) -> MaskResult:
    """Overridden layers at their own sparsity (each alone), the rest by ``sparsity``/``scope`` as usual."""
    own = {s.name: layer_sparsity(s.name, p, node_names.get(s.name, "")) for s in slots}
    rest = [s for s in slots if own[s.name] is None]
    res = unstructured_masks(rest, sparsity=p.sparsity, scope=p.scope, criterion=p.criterion, seed=p.seed) \
        if rest else MaskResult()
    for s in slots:
        value = own[s.name]
        if value is None:
            continue
        one = unstructured_masks([s], sparsity=value, scope="layer", criterion=p.criterion, seed=p.seed)
        res.keep.update(one.keep)
        res.threshold.update(one.threshold)
    return res


def _tied_weights(module: Any) -> dict[int, list[str]]:
    """Parameters reachable under more than one name (tied embeddings), by id: their names."""
    names: dict[int, list[str]] = {}
    for n, prm in module.named_parameters(remove_duplicate=False):
        names.setdefault(id(prm), []).append(n)
    return {k: v for k, v in names.items() if len(v) > 1}


def _torch_in_axis(mod: Any) -> int | None:
    """Input-feature axis of a prunable weight, or None when the module is not prunable."""
    import torch.nn as nn

    w = getattr(mod, "weight", None)
    if w is None or not hasattr(w, "dim") or w.dim() < 2:
        return None
    if isinstance(mod, nn.modules.conv._ConvTransposeNd):
        return 0
    if isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)):
        return 1
    if type(mod).__name__ == "Conv1D":  # transformers' GPT-2 style layer stores [in, out]
        return 0
    return None


def _onnx_weight(node: Any, inits: dict[str, Any]) -> tuple[str, int] | None:
    """(initializer name, input axis) of the constant weight a Conv/Gemm/MatMul node reads."""
    if len(node.input) < 2 or node.input[1] not in inits:
        return None
    name = node.input[1]
    ndim = len(inits[name].dims)
    if node.op_type == "Conv" and ndim >= 3:
        return name, 1
    if node.op_type == "Gemm" and ndim == 2:
        return name, 1 if onnxio.node_attr(node, "transB", 0) else 0
    if node.op_type == "MatMul" and ndim >= 2:
        return name, ndim - 2
    return None
