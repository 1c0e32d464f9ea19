"""A quantize step layer by layer: build variants with chosen nodes quantized, score each node cheaply.

Implements slimline.core.sensitivity.protocol.Layerwise for the ONNX quantize steps. Every variant is
made by the step's own quantizer (``QuantizeBase.quantize_once``: the step's settings, the pre-processed
graph, ``nodes_to_exclude`` for the nodes left in float), so a ranking or a search result is exactly what
the step produces with the parameters :meth:`QuantizeLayerwise.params_for` writes.

Cheap scores: the weight's own rounding error (int8 grid of the step's settings, simulated in numpy)
and the error each node adds at its output on real inputs in the fully quantized model (the guardrail's
``node_errors`` probe: one quantization and one run for all nodes).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from slimline.core.handle import ModelHandle
from slimline.core.plugin import StepContext
from slimline.core.sensitivity.protocol import KEEP, CheapScore, LayerInfo, Level, Settings

LEVEL = "int8"
_FUSED_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid")


class QuantizeLayerwise:
    """One ONNX model prepared for per-node quantization by ``plugin`` (a QuantizeBase)."""

    def __init__(self, plugin: Any, model: ModelHandle, params: Any, ctx: StepContext) -> None:
        import onnx
        from onnx import numpy_helper

        self.plugin, self.model, self.params, self.ctx = plugin, model, params, ctx
        self.step: str = plugin.id
        self.exclusion_field: str = plugin.exclusion_field
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=".layerwise-", dir=ctx.work_dir))
        self.prep_path, self.notes = plugin.prepare_graph(model, params, self.tmp / "prep.onnx")
        proto = onnx.load(str(self.prep_path))
        self._graph = proto.graph
        inits = {i.name: i for i in proto.graph.initializer}
        fixed = set(plugin._exclusions(proto.graph, params))   # the user's own exclusions stay in float
        from slimline.plugins._shared.layerwise import module_weights, tensor_name

        modules = module_weights(onnx.load(model.path, load_external_data=False))   # pre-processing drops them
        self._weights: dict[str, np.ndarray] = {}
        self.layers: list[LayerInfo] = []
        for name, op, weight in plugin.weight_nodes(self.prep_path, params):
            if name in fixed:
                continue
            arr = numpy_helper.to_array(inits[weight])
            self._weights[name] = arr
            self.layers.append(LayerInfo(name=name, tensor=tensor_name(_source_name(weight), name, modules), op=op,
                                         params=int(arr.size)))
        self._nodes = {n.name: n for n in proto.graph.node if n.name}
        wtype = str(getattr(params, "weight_type", "QInt8"))
        self.levels: list[Level] = [Level(LEVEL, f"INT8 ({wtype})", 1.0)]
        self.default_level = LEVEL

    # --- building ----------------------------------------------------------------------------
    def _excluded(self, settings: Settings) -> list[str]:
        quantized = {n for n, lv in settings.items() if lv != KEEP}
        return [ly.name for ly in self.layers if ly.name not in quantized]

    def build(self, settings: Settings, out_dir: Path) -> ModelHandle:
        from slimline.plugins.quantize.base import _output_handle

        out_dir.mkdir(parents=True, exist_ok=True)
        if not any(lv != KEEP for lv in settings.values()):
            dst = out_dir / "model.onnx"
            shutil.copyfile(self.prep_path, dst)   # nothing quantized: the float graph the step starts from
            return _output_handle(dst, self.model)
        dst = out_dir / "model.onnx"
        self.plugin.quantize_once(self.prep_path, dst, self.params, self.ctx, exclude=tuple(self._excluded(settings)))
        return _output_handle(dst, self.model)

    def params_for(self, settings: Settings) -> dict[str, Any]:
        doc = self.params.model_dump(mode="json")
        doc["nodes_to_exclude"] = list(dict.fromkeys([*doc.get("nodes_to_exclude", []), *self._excluded(settings)]))
        return doc

    def saved_bytes(self, layer: str, level: str) -> float:
        if level == KEEP or layer not in self._weights:
            return 0.0
        w = self._weights[layer]
        return float(w.nbytes - w.size)  # float32 → int8 (scales and zero points are a few bytes per channel)

    # --- cheap scores ------------------------------------------------------------------------
    def cheap_scores(self, dataset: Any, cancel: Any) -> list[CheapScore]:
        out = {ly.name: CheapScore(ly.name, LEVEL, weight_error=_int8_weight_error(
            self._weights[ly.name], ly.op, self._nodes.get(ly.name), self.params)) for ly in self.layers}
        if dataset is not None and self.layers:
            for name, err in self._node_errors(dataset, cancel).items():
                if name in out:
                    c = out[name]
                    out[name] = CheapScore(c.layer, c.level, c.weight_error, max(err, 0.0),
                                           "error added at the node's output, all nodes quantized")
        return [out[ly.name] for ly in self.layers]

    def _node_errors(self, dataset: Any, cancel: Any) -> dict[str, float]:
        from types import SimpleNamespace

        from slimline.plugins.quantize import evaluate

        q_all = self.tmp / "all.onnx"
        self.plugin.quantize_once(self.prep_path, q_all, self.params, self.ctx)
        sess = evaluate.make_session(self.prep_path, self.ctx.threads)
        evalset = evaluate.build_eval_set(SimpleNamespace(eval=dataset), sess, self.model.dim_defaults, 64,
                                          self.ctx.seed)
        del sess
        inits = {i.name for i in self._graph.initializer}
        cands = [(n.name, self._probe_tensor(n.output[0]), [i for i in n.input if i and i not in inits])
                 for n in (self._nodes[ly.name] for ly in self.layers) if n.output]
        return dict(evaluate.node_errors(self.prep_path, q_all, evalset, cands, max_rows=32, cancel=cancel))

    def _probe_tensor(self, output: str) -> str:
        """The node's output, or the output of the one activation after it: QDQ quantization fuses
        Conv/Gemm + Relu, so only the activation's output exists in both graphs."""
        users = [n for n in self._graph.node if output in n.input]
        if len(users) == 1 and users[0].op_type in _FUSED_ACTIVATIONS and users[0].output:
            return str(users[0].output[0])
        return output

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _source_name(weight: str) -> str:
    """The original tensor name: pre-processing keeps initializer names, Gemm→MatMul adds a suffix."""
    for suffix in ("_transposed", "_T"):
        if weight.endswith(suffix):
            return weight[: -len(suffix)]
    return weight


def _int8_weight_error(w: np.ndarray, op: str, node: Any, params: Any) -> float:
    """‖W − q(W)‖/‖W‖ on the step's int8 grid: symmetric per output channel (or per tensor), 7 bits with
    ``reduce_range``. A weight statistic: what rounding alone does to this layer, before any data."""
    from slimline.core.fidelity import rel_l2_error

    w = np.asarray(w, dtype=np.float64)
    if w.size == 0:
        return 0.0
    levels = 63.0 if getattr(params, "reduce_range", False) else 127.0
    if bool(getattr(params, "per_channel", False)) and w.ndim >= 2:
        axis = _channel_axis(op, node, w.ndim)
        w = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        scale = np.abs(w).max(axis=1, keepdims=True) / levels
    else:
        scale = np.full((1,) * w.ndim, float(np.abs(w).max()) / levels)
    scale = np.where(scale > 0, scale, 1.0)
    return rel_l2_error(w, np.round(w / scale) * scale, floor=0.0)


def _channel_axis(op: str, node: Any, ndim: int) -> int:
    if op in ("Conv", "ConvTranspose", "Gather"):
        return 0
    if op == "Gemm" and node is not None:
        trans = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans else ndim - 1
    return ndim - 1
