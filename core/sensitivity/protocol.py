"""What a compression step offers layer by layer: the contract between steps and sensitivity / search.

A step whose plugin has ``layerwise(model, params, ctx)`` can be analysed one layer at a time and
searched over per layer. The built-in quantize, prune and low-rank plugins implement it; a new step
kind (say mixed 8/4-bit weight-only quantization for language models) only has to add that method
(a small adapter in its own package) and the sensitivity ranking, the budgeted search, the CLI and
the window work with it unchanged. Why a protocol and not code here: how to quantize, prune or
factorize one layer is the plugin's knowledge; the engine only asks "this layer at that level".

Settings name layers by :attr:`LayerInfo.name` and levels by :attr:`Level.key`; a layer that a
setting does not name is left as it is (float, dense, full rank): the implicit level ``KEEP``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from slimline.core.handle import ModelHandle

KEEP = "keep"  # the implicit level of a layer a setting does not name: left as it is
Settings = Mapping[str, str]  # layer name -> level key


@dataclass(frozen=True)
class LayerInfo:
    """One layer a step can change on its own."""

    name: str      # what the step's per-layer parameters name (an ONNX node, a torch module)
    tensor: str    # its weight tensor: the name the layer table and the histograms use
    op: str        # Conv, Gemm, MatMul, Linear, Conv2d, ...
    params: int    # values in the weight


@dataclass(frozen=True)
class Level:
    """One setting a layer can get, e.g. INT8, 50 % zeros, a quarter of its rank."""

    key: str          # stable id in settings and files ("int8", "0.5", "r0.25")
    label: str        # for people
    strength: float   # orders the levels: higher = more compression


@dataclass(frozen=True)
class CheapScore:
    """What one layer at one level costs, measured without building and running the whole model."""

    layer: str
    level: str
    weight_error: float | None = None   # ‖ΔW‖ / ‖W‖
    output_error: float | None = None   # relative error of the layer's own output on real inputs
    note: str = ""


@runtime_checkable
class Layerwise(Protocol):
    """A step, prepared for one model, that builds variants with per-layer settings."""

    step: str                 # the plugin id
    layers: list[LayerInfo]   # the layers it can change, in model order
    levels: list[Level]       # what each can get, weakest first (KEEP is implied)
    default_level: str        # the level the step's own parameters ask for (the headline of a ranking)
    exclusion_field: str      # the parameter listing layers the step leaves alone

    def build(self, settings: Settings, out_dir: Path) -> ModelHandle:
        """A model with each named layer at its level and every other layer left as it is."""
        ...

    def params_for(self, settings: Settings) -> dict[str, Any]:
        """The step's parameters (JSON) that make exactly this model: for pipeline files and the form."""
        ...

    def cheap_scores(self, dataset: Any, cancel: Any) -> list[CheapScore]:
        """Weight error and (with data) the error at each layer's output, for every layer and level."""
        ...

    def saved_bytes(self, layer: str, level: str) -> float:
        """Bytes the setting saves on disk (or compressed, for zeros): what the search spends damage on."""
        ...

    def close(self) -> None:
        """Remove the step's temporary files."""
        ...

    # Optional: ``always_measure`` (layer names) — measured end to end by the analysis whatever their cheap score,
    # for layers the step knows its cheap score underrates (an LM head: no later layer damps its error).
    # Optional, for steps with a continuous setting (a sparsity, a rank fraction): ``level_for(strength) -> Level``
    # gives a level at any strength, which lets the search find the strongest uniform preset within the budget.


def layerwise_for(plugin: Any, model: ModelHandle, params: Any, ctx: Any) -> Layerwise:
    """The plugin's layer-wise view of ``model``; a clear error when the step has none."""
    from slimline.core.errors import SlimlineError

    make = getattr(plugin, "layerwise", None)
    if make is None:
        raise SlimlineError(f"{getattr(plugin, 'id', plugin)} cannot be applied layer by layer",
                            subject="--step",
                            hint="choose quantize_dynamic, quantize_static, quantize_weight_only, prune, "
                                 "prune_structured or lowrank")
    return make(model, params, ctx)


def exclusion_field(plugin_cls: Any) -> str:
    """The parameter holding the layers a step leaves alone ('' when it has none)."""
    return str(getattr(plugin_cls, "exclusion_field", "") or "")


def with_excluded(plugin_cls: Any, params: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """``params`` with ``names`` added to the step's exclusion list (validated by the step's Params)."""
    field = exclusion_field(plugin_cls)
    if not field:
        from slimline.core.errors import SlimlineError

        raise SlimlineError(f"{plugin_cls.id} has no exclusion list", subject=plugin_cls.id)
    current = list(params.get(field) or [])
    merged = current + [n for n in names if n not in current]
    out = {**params, field: merged}
    return plugin_cls.Params.model_validate(out).model_dump(mode="json")


__all__ = ["KEEP", "CheapScore", "LayerInfo", "Layerwise", "Level", "Settings", "exclusion_field",
           "layerwise_for", "with_excluded"]
