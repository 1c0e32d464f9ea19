"""Layer-wise view of the weight-rewriting steps (prune, low-rank) for torch and ONNX models.

Implements slimline.core.sensitivity.protocol.Layerwise once for every step that changes Linear/Conv
weights: variants are built by the step's own ``run`` with per-layer parameters (so a ranking or a search
result is exactly what the step makes with :meth:`params_for`); the cheap scores apply the same rule to
the weight in numpy and weigh the change by the layer's real inputs (their second moment, collected with
the low-rank step's data-aware statistics) to get the error at the layer's output without running the
model once per layer. Subclasses say which layers, which levels and what a level does to a weight.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from slimline.core.handle import ModelHandle
from slimline.core.plugin import StepContext
from slimline.core.sensitivity.protocol import KEEP, CheapScore, LayerInfo, Level, Settings
from slimline.plugins._shared import common, onnxio
from slimline.plugins._shared.layers import matches_any

STAT_ROWS = 64        # rows of data for the input statistics
STAT_BATCH = 16


@dataclasses.dataclass
class WeightLayer:
    info: LayerInfo
    matrix: np.ndarray      # [out, in] (a conv kernel as [out, in·kh·kw]), float
    in_axis: int            # the input-feature axis of the stored weight (for masks that care)
    handle: Any = None      # torch module or ONNX node


class WeightLayerwise:
    """Base: subclasses set ``levels``/``default_level`` and implement ``_candidate``, ``_apply``, ``params_for``."""

    exclusion_field = "skip"
    conv_in_onnx = True     # ONNX Conv weights are candidates (magnitude pruning: yes; low-rank: no)

    def __init__(self, plugin: Any, model: ModelHandle, params: Any, ctx: StepContext) -> None:
        self.plugin, self.model, self.params, self.ctx = plugin, model, params, ctx
        self.step: str = plugin.id
        self.notes: list[str] = []
        self.levels: list[Level] = []
        self.default_level = ""
        self._module: Any = None
        self._proto: Any = None
        self._weights: dict[str, WeightLayer] = {}
        if model.family == "torch":
            self._module = common.load_module(model).eval()
            self._list_torch()
        else:
            self._proto = onnxio.load_onnx_model(model)
            self._list_onnx()
        self.layers: list[LayerInfo] = [w.info for w in self._weights.values()]

    # --- listing -----------------------------------------------------------------------------
    def _candidate(self, name: str, op: str) -> bool:
        """Whether the step would touch this layer (its skip list, the output layer, the op kind)."""
        raise NotImplementedError

    def _list_torch(self) -> None:
        import torch.nn as nn

        for name, mod in self._module.named_modules():
            if isinstance(mod, nn.Linear):
                op, in_axis = "Linear", 1
            elif isinstance(mod, nn.Conv2d) and mod.groups == 1:
                op, in_axis = "Conv2d", 1
            else:
                continue
            if not name or not self._candidate(name, op):
                continue
            w = mod.weight.detach().cpu().float().numpy()
            self._weights[name] = WeightLayer(LayerInfo(name, f"{name}.weight", op, int(w.size)),
                                              w.reshape(w.shape[0], -1), in_axis, mod)

    def _list_onnx(self) -> None:
        from onnx import numpy_helper

        inits = onnxio.initializer_map(self._proto)
        modules = module_weights(self._proto)
        for node in self._proto.graph.node:
            if node.op_type not in ("MatMul", "Gemm", "Conv") or len(node.input) < 2 or node.input[1] not in inits:
                continue
            if node.op_type == "Conv" and not self.conv_in_onnx:
                continue
            w = numpy_helper.to_array(inits[node.input[1]])
            if w.dtype.kind != "f" or w.ndim < 2 or (node.op_type == "MatMul" and w.ndim != 2):
                continue
            name = node.name or node.input[1]
            if not self._candidate(name, node.op_type) or name in self._weights:
                continue
            if node.op_type == "Conv":
                matrix, in_axis = w.reshape(w.shape[0], -1), 1
            elif node.op_type == "Gemm" and onnxio.node_attr(node, "transB", 0):
                matrix, in_axis = w, 1
            else:
                matrix, in_axis = w.T, 0   # MatMul / Gemm without transB store [in, out]
            self._weights[name] = WeightLayer(LayerInfo(name, tensor_name(node.input[1], node.name, modules),
                                                        node.op_type, int(w.size)),
                                              np.array(matrix, dtype=np.float32), in_axis, node)

    def _output_layer(self) -> str | None:
        """The layer producing the model's output (steps that keep it ask for it)."""
        if self._module is not None:
            return common.output_layer_name(self._module, common.example_inputs(self.model))
        inits = {i.name for i in self._proto.graph.initializer}
        last = next((n for n in reversed(self._proto.graph.node) if n.op_type in ("MatMul", "Gemm", "Conv")
                     and len(n.input) > 1 and n.input[1] in inits), None)
        return (last.name or last.input[1]) if last is not None else None

    # --- what a level does -------------------------------------------------------------------
    def _apply(self, layer: WeightLayer, level: str) -> np.ndarray:
        """The layer's [out, in] matrix after ``level`` (numpy; the same rule the step applies)."""
        raise NotImplementedError

    def params_for(self, settings: Settings) -> dict[str, Any]:
        raise NotImplementedError

    def saved_bytes(self, layer: str, level: str) -> float:
        raise NotImplementedError

    def _untouched(self, settings: Settings) -> list[str]:
        """Candidate layers the settings leave as they are (for the step's skip list)."""
        return [n for n in self._weights if settings.get(n, KEEP) == KEEP]

    # --- building ----------------------------------------------------------------------------
    def build(self, settings: Settings, out_dir: Path) -> ModelHandle:
        out_dir.mkdir(parents=True, exist_ok=True)
        params = self.plugin.Params.model_validate(self.params_for(settings))
        ctx = dataclasses.replace(self.ctx, work_dir=out_dir, progress_cb=None, event_cb=None)
        return self.plugin.run(self.model, params, ctx).model

    # --- cheap scores ------------------------------------------------------------------------
    def cheap_scores(self, dataset: Any, cancel: Any) -> list[CheapScore]:
        from slimline.core.fidelity import linear_output_error, rel_l2_error

        stats = self._input_stats(dataset, cancel) if dataset is not None else {}
        out = []
        for name, wl in self._weights.items():
            st = stats.get(name) or {}
            for lv in self.levels:
                cancel.raise_if_cancelled()
                changed = self._apply(wl, lv.key)
                w_err = rel_l2_error(wl.matrix, changed, floor=0.0)
                o_err = linear_output_error(wl.matrix, changed, gram=st.get("gram"), rms=st.get("rms")) \
                    if st else None
                out.append(CheapScore(name, lv.key, w_err, o_err,
                                      "" if st else "no input statistics for this layer: weight error only"))
        return out

    def _input_stats(self, dataset: Any, cancel: Any) -> dict[str, dict[str, np.ndarray]]:
        """XᵀX/N (or RMS) of each layer's inputs on the first rows: the low-rank step's data-aware statistics."""
        rows = dataset.take(STAT_ROWS)
        try:
            if self._module is not None:
                from slimline.plugins.lowrank import torch_lr
                from slimline.plugins.lowrank.svd import RankRule

                targets = [torch_lr.Target(n, w.info.op, w.handle, RankRule("ratio", 1.0))
                           for n, w in self._weights.items()]
                batches = (common.batch_feeds(self.model, feeds) for feeds, _ in rows.batches(STAT_BATCH))
                return torch_lr.input_stats(self._module, targets, batches, cancel.raise_if_cancelled)
            from slimline.plugins.lowrank import onnx_lr
            from slimline.plugins.lowrank.svd import RankRule

            rule = RankRule("ratio", 1.0)
            otargets = [onnx_lr.OnnxTarget(0, w.handle, n, w.handle.input[1], w.info.op, w.matrix, rule)
                        for n, w in self._weights.items() if w.info.op in ("MatMul", "Gemm")]
            if not otargets:
                return {}
            return onnx_lr.input_stats(self._proto, otargets, (f for f, _ in rows.batches(STAT_BATCH)),
                                       cancel.raise_if_cancelled)
        except Exception as exc:  # noqa: BLE001 - statistics are a refinement: say so, rank by weight error
            from slimline.core.errors import Cancelled

            if isinstance(exc, Cancelled):
                raise
            self.notes.append(f"input statistics unavailable ({type(exc).__name__}: {exc}): ranked by weight error")
            return {}

    def close(self) -> None:
        self._module = None
        self._proto = None


def module_weights(proto: Any) -> dict[str, str]:
    """Node name → the torch weight it computes with ("encoder.layer.0.output.dense.weight"), from the name
    scopes torch.onnx's exporter writes into node metadata. Why: that exporter stores transposed weights
    as anonymous constants ("val_142"); with this the ranking names the layers as the layer table does."""
    import ast

    out: dict[str, str] = {}
    for node in proto.graph.node:
        for prop in node.metadata_props:
            if prop.key != "pkg.torch.onnx.name_scopes":
                continue
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                break
            if isinstance(scopes, list) and len(scopes) >= 2 and scopes[-2]:
                out[node.name] = f"{scopes[-2]}.weight"
            break
    return out


def tensor_name(weight: str, node_name: str, modules: dict[str, str]) -> str:
    """The weight's name for people: its own when it reads like one, else the exporter's module name."""
    if weight.startswith("val_") or "." not in weight:
        return modules.get(node_name, weight)
    return weight


def matches(name: str, patterns: list[str], tensor: str = "") -> bool:
    return matches_any(name, patterns) or bool(tensor and matches_any(tensor, patterns))


def level_key(value: float) -> str:
    return f"{value:g}"
