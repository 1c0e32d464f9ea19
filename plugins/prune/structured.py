"""Structured channel pruning with Torch-Pruning's dependency graph.

Whole output channels/neurons are removed together with everything that depends on
them (the next layer's inputs, BatchNorm entries, residual partners), so the result
is a physically smaller dense model whose latency really drops. The layer that
produces the model's output is never pruned (its width is the task's output size).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from slimline.core.errors import StepFailed
from slimline.core.handle import ModelHandle
from slimline.core.plugin import Plugin, PluginParams, Problem, StepContext, StepOutput
from slimline.plugins._shared import common
from slimline.plugins._shared.layers import layer_patterns, matches_any, selection_problems

_SPEC_PRUNABLE = {"Linear", "Conv1d", "Conv2d"}


class StructuredParams(PluginParams):
    pruning_ratio: float = Field(0.5, gt=0.0, le=0.95, description="Fraction of channels/neurons to remove")
    importance: Literal["auto", "magnitude", "taylor", "random"] = Field(
        "auto", description="Channel ranking: 'magnitude' (Lp norm of weights), 'taylor' (|w·grad| from a "
        "few training batches), 'random' (baseline); 'auto' = taylor when training data with labels is given")
    norm_p: Literal[1, 2] = Field(2, description="Norm for magnitude importance (1 = L1, 2 = L2)")
    global_pruning: bool = Field(False, description="Rank channels across all layers (uneven widths) "
                                 "instead of the same ratio per layer")
    max_layer_ratio: float = Field(0.9, gt=0.0, le=1.0, description="Most any single layer may lose "
                                   "(guards global pruning from emptying a layer)")
    iterative_steps: int = Field(1, ge=1, le=50, description="Prune in this many steps (ratio grows linearly)")
    round_to: int = Field(0, ge=0, le=256, description="Keep channel counts multiples of this (e.g. 8); 0 = off")
    ignored_layers: list[str] = layer_patterns("Layer names or glob patterns never pruned "
                                               "(the output layer is always kept)")
    overrides: dict[str, float] = Field(
        default_factory=dict, description="Per-layer ratio, layer name or glob → fraction of its output channels "
        "to remove in (0, 0.95]; layers not listed get pruning_ratio. Written by the budgeted search")
    taylor_batches: int = Field(4, ge=1, le=1000, description="Training batches for Taylor importance")
    batch_size: int = Field(32, ge=1, le=4096, description="Batch size for Taylor importance")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed for random importance")

    @field_validator("overrides")
    @classmethod
    def _check_overrides(cls, v: dict[str, float]) -> dict[str, float]:
        for name, value in v.items():
            if isinstance(value, bool) or not 0.0 < float(value) <= 0.95:
                raise ValueError(f"overrides[{name!r}]: ratio must be in (0, 0.95], got {value}")
        return v


class StructuredPrune(Plugin):
    """Remove channels with dependency tracking; reports params and MACs before/after."""

    id: ClassVar[str] = "builtin.prune_structured"
    version: ClassVar[str] = "1"
    title: ClassVar[str] = "Structured prune (channels)"
    category: ClassVar[str] = "prune"  # type: ignore[assignment]
    description: ClassVar[str] = (
        "Physically removes the least important channels/neurons (Torch-Pruning dependency graph): a smaller, "
        "faster dense model. Magnitude, Taylor (with training data) or random importance; ignored layers; "
        "round to multiples of 8; iterative steps. Accuracy drops until fine-tuned or distilled.")
    input_formats: ClassVar[tuple[str, ...]] = ("torch",)  # type: ignore[assignment]
    output_format: ClassVar[str] = "torch"  # type: ignore[assignment]
    Params: ClassVar[type[PluginParams]] = StructuredParams

    # The parameter that leaves layers alone (slimline.core.sensitivity: click-to-exclude, the search).
    exclusion_field: ClassVar[str] = "ignored_layers"

    def layerwise(self, model: ModelHandle, params: PluginParams, ctx: StepContext) -> Any:
        """This step one layer at a time (slimline.core.sensitivity.protocol.Layerwise)."""
        from slimline.plugins.prune.layerwise import StructuredLayerwise

        return StructuredLayerwise(self, model, params, ctx)

    def check(self, model: ModelHandle, params: PluginParams) -> list[Problem]:
        problems = self.check_format(model)
        if problems:
            return problems
        assert isinstance(params, StructuredParams)
        problems += selection_problems(
            model, _SPEC_PRUNABLE, params.ignored_layers, keep_last=True,
            none_found=Problem("nothing to prune: the model needs a Conv/Linear layer besides the one "
                               "producing the output"),
            all_excluded=Problem("every prunable layer is ignored", field="ignored_layers",
                                 fix="remove names from ignored_layers"))
        if params.importance == "taylor":
            problems.append(Problem("taylor importance needs training (or calibration) data with labels",
                                    severity="warning", field="importance",
                                    fix="add a training dataset, or use 'auto' to fall back to magnitude"))
        return problems

    def run(self, model: ModelHandle, params: PluginParams, ctx: StepContext) -> StepOutput:
        assert isinstance(params, StructuredParams)
        import torch
        import torch_pruning as tp

        ctx.cancel.raise_if_cancelled()
        if model.family != "torch":
            raise StepFailed(f"structured pruning needs a torch model, got {model.family}", subject=self.id,
                             hint="open the torch model, or use magnitude pruning on ONNX")
        ctx.progress(0.0, "loading model")
        module = common.load_module(model).eval()
        example = common.example_inputs(model)
        with torch.no_grad():
            ref_out = common.first_tensor(common.forward(module, example))
        out_layer = common.output_layer_name(module, example)
        ignored = [m for n, m in module.named_modules() if n and matches_any(n, params.ignored_layers)]
        if out_layer:
            ignored.append(module.get_submodule(out_layer))
        shapes_before = _layer_shapes(module)
        macs_before, params_before = tp.utils.count_ops_and_params(module, example)

        taylor_data = _labelled_data(ctx)
        kind = params.importance
        if kind == "auto":
            kind = "taylor" if taylor_data is not None else "magnitude"
        if kind == "taylor" and taylor_data is None:
            raise StepFailed("taylor importance needs training or calibration data with labels",
                             subject=f"{self.id}.importance",
                             hint="add a labelled dataset to the run, or set importance to 'magnitude'")
        if kind == "taylor":
            imp = tp.importance.TaylorImportance()
        elif kind == "random":
            torch.manual_seed(params.seed)
            imp = tp.importance.RandomImportance()
        else:
            imp = tp.importance.MagnitudeImportance(p=params.norm_p)

        ctx.progress(0.05, "building dependency graph")
        ratio_dict = _ratio_overrides(module, params, ignored)
        try:
            pruner = tp.pruner.MetaPruner(
                module, example, importance=imp, pruning_ratio=params.pruning_ratio,
                pruning_ratio_dict=ratio_dict or None,
                global_pruning=params.global_pruning, max_pruning_ratio=params.max_layer_ratio,
                iterative_steps=params.iterative_steps, ignored_layers=ignored,
                round_to=params.round_to or None)
        except Exception as exc:
            raise StepFailed(f"Torch-Pruning cannot trace this model: {type(exc).__name__}: {exc}",
                             subject=self.id, hint="add the failing layers to ignored_layers, or use "
                             "magnitude pruning / low-rank instead") from None
        n_groups = max(1, len(list(pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                                             root_module_types=pruner.root_module_types))))
        groups_pruned = 0
        for step in range(params.iterative_steps):
            ctx.cancel.raise_if_cancelled()
            if kind == "taylor":
                _taylor_gradients(module, model, taylor_data, params, ctx)
            for gi, group in enumerate(pruner.step(interactive=True)):
                ctx.cancel.raise_if_cancelled()
                group.prune()
                groups_pruned += 1
                frac = (step + min(1.0, (gi + 1) / n_groups)) / params.iterative_steps
                ctx.progress(0.1 + 0.7 * frac, f"step {step + 1}/{params.iterative_steps}: group {gi + 1}")
            module.zero_grad(set_to_none=True)
        module.eval()
        macs_after, params_after = tp.utils.count_ops_and_params(module, example)
        with torch.no_grad():
            new_out = common.first_tensor(common.forward(module, example))
        if tuple(new_out.shape) != tuple(ref_out.shape):
            raise StepFailed(f"pruning changed the output shape {tuple(ref_out.shape)} → {tuple(new_out.shape)}",
                             subject=self.id, hint="add the output layer to ignored_layers")
        ctx.cancel.raise_if_cancelled()
        ctx.progress(0.85, "saving")
        out = common.save_module(module, model, ctx.output_path("pruned.safetensors"))
        try:
            _verify_reload(out, new_out, example)
        except BaseException:
            Path(out.path).unlink(missing_ok=True)
            raise

        rows = _shape_rows(shapes_before, _layer_shapes(module), ignored_names={
            n for n, m in module.named_modules() if any(m is i for i in ignored)})
        ratio = params_after / params_before if params_before else 1.0
        metrics = {"params_before": float(params_before), "params_after": float(params_after),
                   "param_ratio": ratio, "macs_before": float(macs_before), "macs_after": float(macs_after),
                   "mac_ratio": macs_after / macs_before if macs_before else 1.0,
                   "groups_pruned": float(groups_pruned)}
        notes = [
            f"Removed channels with {kind} importance"
            + (f" (L{params.norm_p})" if kind == "magnitude" else "")
            + f", ratio {params.pruning_ratio:.0%} {'globally' if params.global_pruning else 'per layer'}"
            + (f", rounded to multiples of {params.round_to}" if params.round_to else "")
            + f", {params.iterative_steps} step(s); output layer {out_layer!r} kept.",
            f"Parameters {params_before:,} → {params_after:,} ({ratio:.2f}×); "
            f"MACs per sample {macs_before:,.0f} → {macs_after:,.0f} ({metrics['mac_ratio']:.2f}×). "
            "Latency is measured after this step, not estimated from MACs.",
            "Accuracy drops until the model is fine-tuned or distilled (add a Distill step after this one).",
        ]
        warnings = []
        if params.importance == "auto" and kind == "magnitude":
            warnings.append("no labelled training data: used magnitude importance instead of Taylor")
        if params_after >= params_before:
            warnings.append("nothing was removed: every layer is ignored or too small to prune")
        ctx.progress(1.0, "done")
        return StepOutput(model=out, metrics=metrics, notes=notes, warnings=warnings, tables={"channels": rows})


def _ratio_overrides(module: Any, params: StructuredParams, ignored: list[Any]) -> dict[Any, float]:
    """``overrides`` as Torch-Pruning's ``pruning_ratio_dict`` (module → ratio); ignored layers stay ignored."""
    out: dict[Any, float] = {}
    for name, mod in module.named_modules():
        if not name or any(mod is i for i in ignored):
            continue
        value = params.overrides.get(name)
        if value is None:
            value = next((v for k, v in params.overrides.items() if matches_any(name, [k])), None)
        if value is not None and hasattr(mod, "weight"):
            out[mod] = float(value)
    return out


def _labelled_data(ctx: StepContext) -> Any:
    data = getattr(ctx, "data", None)
    for attr in ("train", "calibration"):
        ds = getattr(data, attr, None) if data is not None else None
        if ds is not None and getattr(ds, "labels", None) is not None and len(ds):
            return ds
    return None


def _taylor_gradients(module: Any, handle: ModelHandle, ds: Any, params: StructuredParams, ctx: StepContext) -> None:
    """Accumulate loss gradients on a few labelled batches (eval mode: BN stats and dropout fixed)."""
    import torch
    import torch.nn.functional as F

    module.zero_grad(set_to_none=True)
    module.eval()
    for bi, (feeds, labels) in enumerate(ds.batches(params.batch_size)):
        if bi >= params.taylor_batches:
            break
        ctx.cancel.raise_if_cancelled()
        logits = common.first_tensor(common.forward(module, common.batch_feeds(handle, feeds)))
        y = torch.as_tensor(labels).long()
        if logits.dim() > 2:
            logits = logits.reshape(-1, logits.shape[-1])
            y = y.reshape(-1)
        F.cross_entropy(logits, y).backward()


def _layer_shapes(module: Any) -> dict[str, tuple[str, list[int], int]]:
    out = {}
    for n, m in module.named_modules():
        w = getattr(m, "weight", None)
        if n and w is not None and hasattr(w, "shape") and w.dim() >= 2:
            out[n] = (type(m).__name__, list(w.shape), sum(p.numel() for p in m.parameters(recurse=False)))
    return out


def _shape_rows(before: dict, after: dict, ignored_names: set[str]) -> list[dict[str, Any]]:
    rows = []
    for n, (op, shape, params) in before.items():
        op2, shape2, params2 = after.get(n, (op, shape, params))
        rows.append({"layer": n, "op": op, "shape_before": shape, "shape_after": shape2,
                     "params_before": params, "params_after": params2,
                     "status": "ignored" if n in ignored_names else ("pruned" if shape2 != shape else "unchanged")})
    return rows


def _verify_reload(out: ModelHandle, expected: Any, example: Any) -> None:
    """The saved archive must rebuild to the same function; never pass on a broken file."""
    import torch

    from slimline.core.torchmodel import load_torch_module

    if out.format != "slimline_torch":  # pragma: no cover
        return
    reloaded = load_torch_module(out)
    with torch.no_grad():
        got = common.first_tensor(common.forward(reloaded, example))
    if not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
        raise StepFailed("the pruned model does not reload to the same outputs",
                         subject=out.path, hint="report this model; use magnitude pruning meanwhile")
