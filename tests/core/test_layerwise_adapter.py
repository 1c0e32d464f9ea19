"""A new step kind joins sensitivity and search through one small adapter: the plugin's ``layerwise``.

The stand-in here is a weight-only 8/4-bit quantizer (what an LLM MatMulNBits step does, in miniature: int8 or
packed int4 weights behind DequantizeLinear, per node). Nothing in slimline.core knows it; registering the
plugin is enough for the ranking and for a mixed 8/4-bit search that beats both uniform presets' budget fit.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from layered_models import OUTLIER_LAYER, save_mlp
from pydantic import Field

from slimline.core.data import DataBundle
from slimline.core.handle import ModelHandle
from slimline.core.models import open_model
from slimline.core.pipeline import Budgets, Evaluation
from slimline.core.plugin import Plugin, PluginParams, StepContext, StepOutput
from slimline.core.sensitivity.protocol import KEEP, CheapScore, LayerInfo, Level


class BitsParams(PluginParams):
    bits: dict[str, int] = Field(default_factory=dict, description="MatMul node → 8 or 4; others stay float")


def _grid(w: np.ndarray, bits: int) -> tuple[np.ndarray, float]:
    top = 2 ** (bits - 1) - 1
    scale = float(np.abs(w).max()) / top or 1.0
    return np.clip(np.round(w / scale), -top - 1, top).astype(np.int8), scale


class WeightBits(Plugin):
    id: ClassVar[str] = "test.weight_bits"
    title: ClassVar[str] = "Test weight-only 8/4-bit"
    category: ClassVar[Any] = "quantize"
    input_formats: ClassVar[tuple] = ("onnx",)
    output_format: ClassVar[Any] = "onnx"
    Params: ClassVar[type] = BitsParams

    def run(self, model: ModelHandle, params: Any, ctx: StepContext) -> StepOutput:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        proto = onnx.load(model.path)
        inits = {i.name: i for i in proto.graph.initializer}
        nodes = []
        for node in proto.graph.node:
            bits = params.bits.get(node.name)
            if node.op_type == "MatMul" and bits and node.input[1] in inits:
                name = node.input[1]
                q, scale = _grid(numpy_helper.to_array(inits[name]), bits)
                stored = helper.make_tensor(f"{name}_q", TensorProto.INT4, q.shape, q.ravel().tolist()) if bits == 4 \
                    else numpy_helper.from_array(q, f"{name}_q")
                proto.graph.initializer.remove(inits[name])
                proto.graph.initializer.extend([stored, numpy_helper.from_array(np.array(scale, np.float32),
                                                                                f"{name}_s")])
                nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s"], [name]))
            nodes.append(node)
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
        del proto.opset_import[:]
        proto.opset_import.append(helper.make_opsetid("", 21))
        proto.ir_version = 10
        path = ctx.output_path("model.onnx")
        onnx.save(proto, str(path))
        return StepOutput(model=open_model(path))

    def layerwise(self, model: ModelHandle, params: Any, ctx: StepContext) -> Any:
        return BitsLayerwise(self, model, params, ctx)


class BitsLayerwise:
    """The whole adapter: which layers, which levels, how to build, how cheap scores look."""

    exclusion_field = ""
    levels = [Level("8", "INT8", 1.0), Level("4", "INT4", 2.0)]
    default_level = "4"

    def __init__(self, plugin: WeightBits, model: ModelHandle, params: Any, ctx: StepContext) -> None:
        import onnx
        from onnx import numpy_helper

        self.plugin, self.model, self.ctx, self.step = plugin, model, ctx, plugin.id
        proto = onnx.load(model.path)
        inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
        self.w = {n.name: inits[n.input[1]] for n in proto.graph.node if n.op_type == "MatMul" and n.input[1] in inits}
        self.layers = [LayerInfo(n, f"{n}.weight", "MatMul", int(w.size)) for n, w in self.w.items()]

    def build(self, settings: Any, out_dir: Path) -> ModelHandle:
        ctx = StepContext(work_dir=out_dir, cancel=self.ctx.cancel)
        return self.plugin.run(self.model, BitsParams.model_validate(self.params_for(settings)), ctx).model

    def params_for(self, settings: Any) -> dict[str, Any]:
        return {"bits": {n: int(lv) for n, lv in settings.items() if lv != KEEP}}

    def cheap_scores(self, dataset: Any, cancel: Any) -> list[CheapScore]:
        from slimline.core.fidelity import rel_l2_error

        out = []
        for n, w in self.w.items():
            for lv in self.levels:
                q, scale = _grid(w, int(lv.key))
                out.append(CheapScore(n, lv.key, weight_error=rel_l2_error(w, q * scale, floor=0.0)))
        return out

    def saved_bytes(self, layer: str, level: str) -> float:
        return 0.0 if level == KEEP else self.w[layer].size * (4 - int(level) / 8)

    def close(self) -> None:
        pass


@pytest.fixture
def registered():
    from slimline.core import registry

    registry.register(WeightBits)
    yield WeightBits
    registry._extra.pop(WeightBits.id, None)
    registry.discover.cache_clear()


def test_a_registered_layerwise_plugin_gets_ranked_and_searched(registered, tmp_path: Path) -> None:
    from slimline.core.search.models import SearchSettings
    from slimline.core.search.run import search
    from slimline.core.sensitivity.analyze import analyze
    from slimline.core.sensitivity.models import SensitivitySettings

    handle, data = save_mlp(tmp_path / "mlp")
    model = open_model(handle.path)
    bundle = DataBundle.from_paths(eval=data, model=model)
    ranking = analyze(model, bundle, SensitivitySettings(step=WeightBits.id, top_k=-1, threads=1), workspace=tmp_path)
    assert ranking.rows[0].layer == OUTLIER_LAYER and ranking.default_level == "4"
    assert {lv.level for lv in ranking.rows[0].levels} == {"8", "4"}
    res = search(model, bundle, SearchSettings(step=WeightBits.id, threads=1, max_candidates=8, latency_runs=3),
                 workspace=tmp_path,
                 evaluation=Evaluation(budgets=Budgets(max_accuracy_drop=0.03)))
    assert res.reachable, res.verdict
    chosen = res.candidate(res.chosen)
    uniform = {c.label: c for c in res.candidates if c.kind == "uniform"}
    assert chosen is not None and set(uniform) == {"uniform: every layer at INT8", "uniform: every layer at INT4"}
    assert chosen.settings.get(OUTLIER_LAYER) != "4"   # the sensitive layer never gets the coarse grid
    best = res.candidate(res.best_uniform)
    assert best is None or chosen.bytes_on_disk <= best.bytes_on_disk
    assert chosen.bytes_on_disk < Path(handle.path).stat().st_size
