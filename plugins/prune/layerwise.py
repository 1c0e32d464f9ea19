"""Pruning steps layer by layer: each Conv/Linear at a few sparsities (magnitude) or channel ratios (structured).

The shared machinery (building with the step's own ``run``, cheap scores from the layer's inputs) is in
slimline.plugins._shared.layerwise; here only what a level means for each step.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from slimline.core.handle import ModelHandle
from slimline.core.plugin import StepContext
from slimline.core.sensitivity.protocol import KEEP, Level, Settings
from slimline.plugins._shared.layerwise import WeightLayer, WeightLayerwise, level_key, matches

SPARSITIES = (0.3, 0.5, 0.7, 0.9)
CHANNEL_RATIOS = (0.25, 0.5, 0.75)


class MagnitudeLayerwise(WeightLayerwise):
    """Unstructured magnitude pruning, one layer at a time (per-layer ``overrides``)."""

    exclusion_field = "skip"

    def __init__(self, plugin: Any, model: ModelHandle, params: Any, ctx: StepContext) -> None:
        super().__init__(plugin, model, params, ctx)
        values = sorted({*SPARSITIES, *([params.sparsity] if params.target == "sparsity" and params.sparsity else [])})
        self.levels = [Level(level_key(v), f"{v:.0%} zeros", v) for v in values]
        self.default_level = level_key(params.sparsity) if params.target == "sparsity" and params.sparsity else "0.5"
        if params.pattern != "unstructured" or params.target != "sparsity":
            self.notes.append("layer by layer, magnitude pruning is unstructured with a target sparsity "
                              f"(the step's pattern '{params.pattern}' / target '{params.target}' is not used)")

    def _candidate(self, name: str, op: str) -> bool:
        return not matches(name, list(self.params.skip), f"{name}.weight")

    def level_for(self, strength: float) -> Level:
        """Any sparsity (the search bisects the uniform preset with it)."""
        v = round(min(max(strength, 0.01), 0.99), 3)
        return Level(level_key(v), f"{v:.1%} zeros", v)

    def _apply(self, layer: WeightLayer, level: str) -> np.ndarray:
        from slimline.plugins.prune.sparsity import WeightSlot, unstructured_masks

        if level == KEEP:
            return layer.matrix
        slot = WeightSlot(layer.info.name, layer.info.op, layer.matrix, 1)
        res = unstructured_masks([slot], sparsity=float(level), scope="layer", criterion=self.params.criterion,
                                 seed=self.params.seed)
        return np.where(res.keep[layer.info.name], layer.matrix, 0.0).astype(layer.matrix.dtype)

    def params_for(self, settings: Settings) -> dict[str, Any]:
        doc = self.params.model_dump(mode="json")
        doc.update(target="sparsity", pattern="unstructured", sparsity=0.0,
                   overrides={n: float(lv) for n, lv in settings.items() if lv != KEEP and n in self._weights})
        return doc

    def saved_bytes(self, layer: str, level: str) -> float:
        """Zeros cost little once compressed: about the value bytes of the zeroed weights (zip size)."""
        if level == KEEP or layer not in self._weights:
            return 0.0
        return float(level) * self._weights[layer].matrix.size * 4


class StructuredLayerwise(WeightLayerwise):
    """Channel pruning, one layer's output channels at a time (torch; per-layer ``overrides``)."""

    exclusion_field = "ignored_layers"

    def __init__(self, plugin: Any, model: ModelHandle, params: Any, ctx: StepContext) -> None:
        self._out_layer: str | None = None
        super().__init__(plugin, model, params, ctx)
        values = sorted({*CHANNEL_RATIOS, params.pruning_ratio})
        self.levels = [Level(level_key(v), f"{v:.0%} channels", v) for v in values]
        self.default_level = level_key(params.pruning_ratio)
        self.notes.append("cheap score of channel pruning: the output energy of the channels with the smallest "
                          "weight norm (the next layer's share is not counted)")

    def _list_torch(self) -> None:
        from slimline.plugins._shared import common

        self._out_layer = common.output_layer_name(self._module, common.example_inputs(self.model))
        super()._list_torch()

    def _candidate(self, name: str, op: str) -> bool:
        return name != self._out_layer and not matches(name, list(self.params.ignored_layers))

    def level_for(self, strength: float) -> Level:
        v = round(min(max(strength, 0.01), 0.95), 3)
        return Level(level_key(v), f"{v:.1%} channels", v)

    def _apply(self, layer: WeightLayer, level: str) -> np.ndarray:
        if level == KEEP:
            return layer.matrix
        norms = np.linalg.norm(layer.matrix, ord=int(self.params.norm_p), axis=1)
        k = int(round(float(level) * len(norms)))
        out = layer.matrix.copy()
        out[np.argsort(norms, kind="stable")[:k]] = 0.0
        return out

    def params_for(self, settings: Settings) -> dict[str, Any]:
        doc = self.params.model_dump(mode="json")
        chosen = {n: float(lv) for n, lv in settings.items() if lv != KEEP and n in self._weights}
        doc.update(overrides=chosen, global_pruning=False,
                   ignored_layers=list(dict.fromkeys([*doc.get("ignored_layers", []), *self._untouched(settings)])))
        return doc

    def saved_bytes(self, layer: str, level: str) -> float:
        """The layer's removed rows and the next layer's matching inputs: about twice its own share."""
        if level == KEEP or layer not in self._weights:
            return 0.0
        return 2.0 * float(level) * self._weights[layer].matrix.size * 4
