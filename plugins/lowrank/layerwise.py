"""Low-rank factorization layer by layer: each Linear (MatMul/Gemm) at a few ranks.

Levels are kept-rank fractions of the layer's full rank; a rank at or above break-even saves nothing
and leaves the layer as it is (the step skips it too). The rest is slimline.plugins._shared.layerwise.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from slimline.core.handle import ModelHandle
from slimline.core.plugin import StepContext
from slimline.core.sensitivity.protocol import KEEP, Level, Settings
from slimline.plugins._shared.layerwise import WeightLayer, WeightLayerwise, level_key, matches

RANK_FRACTIONS = (0.5, 0.25, 0.125)


class LowRankLayerwise(WeightLayerwise):
    exclusion_field = "skip"
    conv_in_onnx = False

    def __init__(self, plugin: Any, model: ModelHandle, params: Any, ctx: StepContext) -> None:
        self._out_layer: str | None = None
        super().__init__(plugin, model, params, ctx)
        fractions = sorted({*RANK_FRACTIONS, *([params.ratio] if params.rank_mode == "ratio" else [])}, reverse=True)
        self.levels = [Level(level_key(f), f"rank ×{f:g}", 1.0 - f) for f in fractions]
        self.default_level = level_key(params.ratio) if params.rank_mode == "ratio" else "0.25"

    def _list_torch(self) -> None:
        self._find_output()
        super()._list_torch()

    def _list_onnx(self) -> None:
        self._find_output()
        super()._list_onnx()

    def _find_output(self) -> None:
        self._out_layer = self._output_layer() if self.params.keep_output_layer else None

    def _candidate(self, name: str, op: str) -> bool:
        if op == "Conv2d" and not self.params.include_conv:
            return False
        return name != self._out_layer and not matches(name, list(self.params.skip))

    def level_for(self, strength: float) -> Level:
        f = round(min(max(1.0 - strength, 0.01), 1.0), 3)
        return Level(level_key(f), f"rank ×{f:g}", 1.0 - f)

    def rank(self, layer: WeightLayer, level: str) -> int:
        return max(1, int(round(float(level) * min(layer.matrix.shape))))

    def _apply(self, layer: WeightLayer, level: str) -> np.ndarray:
        from slimline.plugins.lowrank.svd import RankRule, factorize

        if level == KEEP:
            return layer.matrix
        f = factorize(layer.matrix, RankRule("rank", self.rank(layer, level)))
        if f.first is None or f.second is None:
            return layer.matrix  # over break-even: the step leaves it alone
        return (f.second @ f.first).astype(layer.matrix.dtype)

    def params_for(self, settings: Settings) -> dict[str, Any]:
        doc = self.params.model_dump(mode="json")
        chosen = {n: self.rank(self._weights[n], lv) for n, lv in settings.items() if lv != KEEP and n in self._weights}
        doc.update(overrides=chosen, skip=list(dict.fromkeys([*doc.get("skip", []), *self._untouched(settings)])))
        return doc

    def saved_bytes(self, layer: str, level: str) -> float:
        if level == KEEP or layer not in self._weights:
            return 0.0
        m, n = self._weights[layer].matrix.shape
        r = self.rank(self._weights[layer], level)
        return float(max(0, m * n - r * (m + n)) * 4)
