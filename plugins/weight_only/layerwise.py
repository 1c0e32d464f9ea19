"""Weight-only quantization layer by layer: mixed 8/4-bit (and float) settings for sensitivity and the search.

Implements slimline.core.sensitivity.protocol.Layerwise for ``builtin.quantize_weight_only``. One setup of the
step (text windows, smoothing: slimline.plugins.weight_only.plugin._Run.setup) and one quantization of every
layer at 4 and at 8 bits serve every variant: a variant is those per-layer results put together
(graph.assemble), which is what the step's own run makes from :meth:`WeightOnlyLayerwise.params_for`
(``layer_bits``: each layer is quantized on its own, so a mix equals layers taken from the uniform runs).

Units: a decoder-block LM has hundreds of MatMuls (SmolLM2-135M: 210 + the head), too many to measure one
by one on two cores, so past ``GROUP_LIMIT`` MatMuls a unit is a decoder block's MatMuls together (said in
the notes and in each row's op, ``MatMul×7``); the LM head is always a unit of its own, and a tied
embedding follows it. ``layerwise_groups`` forces either.

Cheap score per unit and level: the relative error the quantized weights add at each layer's output on
the calibration windows, ``Σ_k E[x_k²] ‖ΔW_k‖² / Σ_k E[x_k²] ‖W_k‖²`` (weight error × activation scale, the
step's own sensitivity measure), summed over the unit's layers; the plain weight error beside it.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from slimline.core.handle import ModelHandle
from slimline.core.plugin import StepContext
from slimline.core.sensitivity.protocol import KEEP, CheapScore, LayerInfo, Level, Settings

GROUP_LIMIT = 48          # more MatMuls than this: one unit per decoder block (layerwise_groups "auto")
LEVEL_BITS = {"int8": 8, "int4": 4}


class WeightOnlyLayerwise:
    """One ONNX LM prepared for per-layer (or per-block) 8/4-bit weights by the weight-only step."""

    exclusion_field = "nodes_to_exclude"

    def __init__(self, plugin: Any, model: ModelHandle, params: Any, ctx: StepContext) -> None:
        from slimline.plugins.weight_only.plugin import _Run

        self.plugin, self.model, self.params, self.ctx = plugin, model, params, ctx
        self.step: str = plugin.id
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=".weight-only-layerwise-", dir=ctx.work_dir))
        try:
            base = params.model_copy(update={"layer_bits": {}, "perplexity_budget": 0.0})
            self.run = _Run(plugin, model, base, ctx, self.tmp)
            self.run.setup(score=False)
            self._quantize_all()
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        s = self.run.settings
        self.levels: list[Level] = [
            Level("int8", "INT8 weights (RTN, symmetric, blocks of 128 or 64 where they divide the input)"
                  if s.bits == 4 else f"INT8 weights (RTN, block {s.block_size})", 1.0),
            Level("int4", f"INT4 weights ({s.algorithm.upper()}, block {s.block_size})", 2.0)]
        self.default_level = "int4"
        self._units()
        head = self.run.lmg.lm_head
        # The head writes the logits, so no later layer or norm damps its error and a relative error at its output
        # underrates it (on SmolLM2-135M its 4-bit weights alone cost 9 of the 24 points 4-bit RTN added): always
        # measured end to end, as the step's own mixed-precision search spares it first.
        self.always_measure: list[str] = [head.node] if head is not None and head.node in self.members else []
        self.notes: list[str] = [n for n in self.run.notes if n.startswith(("settings:", "calibration on"))]
        self.notes.append(self._unit_note)
        if self.always_measure:
            self.notes.append("the LM head is always measured end to end (its relative output error underrates it)")
        self.notes.append("cheap score: relative error the quantized weights add at each layer's output on the "
                          "calibration windows (weight error × activation power per input channel), summed over "
                          "the unit's layers")

    # --- setup -------------------------------------------------------------------------------
    def _quantize_all(self) -> None:
        """Every target at 4 and at 8 bits, each layer on its own (the step's own quantization)."""
        r = self.run
        self.quant = {}
        for key, bits in LEVEL_BITS.items():
            self.ctx.cancel.raise_if_cancelled()
            low, _, emb_q = r._quantize(r.lmg, r.sig, r.targets, r.cal, None, {t: bits for t in r.targets})
            self.quant[key] = (low, emb_q)

    def _units(self) -> None:
        """The units the ranking and the search change: single MatMuls, or a decoder block's MatMuls."""
        lmg, targets = self.run.lmg, self.run.targets
        by = {lin.node: lin for lin in lmg.linears}
        mode = getattr(self.params, "layerwise_groups", "auto")
        grouped = mode == "block" or (mode == "auto" and len(targets) > GROUP_LIMIT)
        self.members: dict[str, list[str]] = {}
        self.layers: list[LayerInfo] = []
        for t in targets:
            lin = by[t]
            name = f"block {lin.block}" if grouped and lin.block is not None and lin.role != "lm_head" else t
            self.members.setdefault(name, []).append(t)
        tied = lmg.embedding is not None and lmg.embedding.tied
        for name, nodes in self.members.items():
            params = sum(by[n].params for n in nodes)
            if len(nodes) == 1:
                lin = by[nodes[0]]
                tensor = lin.weight + (" (+ the tied embedding)" if lin.role == "lm_head" and tied else "")
                self.layers.append(LayerInfo(name=name, tensor=tensor, op="MatMul", params=params))
            else:
                self.layers.append(LayerInfo(name=name, tensor=f"{len(nodes)} MatMuls of decoder {name}",
                                             op=f"MatMul×{len(nodes)}", params=params))
        n_blocks = sum(1 for ly in self.layers if ly.name.startswith("block "))
        self._unit_note = (f"units: {len(self.layers)} — {n_blocks} decoder blocks (each block's MatMuls share one "
                           f"setting) and {len(self.layers) - n_blocks} single MatMul(s), of {len(targets)} MatMuls"
                           if grouped else f"units: each of the {len(targets)} MatMuls on its own")

    # --- building ----------------------------------------------------------------------------
    def bits_for(self, settings: Settings) -> dict[str, int]:
        """Each MatMul's bits for ``settings`` (0: float)."""
        out = {t: 0 for t in self.run.targets}
        for unit, level in settings.items():
            if level != KEEP:
                for node in self.members.get(unit, []):
                    out[node] = LEVEL_BITS[level]
        return out

    def build(self, settings: Settings, out_dir: Path) -> ModelHandle:
        from slimline.core.lm.genai import copy_companions
        from slimline.plugins._shared import onnxio
        from slimline.plugins.weight_only.graph import Plan, assemble

        r = self.run
        bits = self.bits_for(settings)
        layers = {t: (self.quant["int8" if b == 8 else "int4"][0][t] if b else None) for t, b in bits.items()}
        emb_q = self.quant["int8" if r.settings.bits == 8 else "int4"][1]   # an untied table: at ``bits``, as run
        plan = Plan(layers=layers, embedding=emb_q, accuracy_level=r.settings.accuracy_level,
                    tied_embedding=self.params.quantize_embeddings)
        self.ctx.cancel.raise_if_cancelled()
        proto = assemble(r.lmg, plan)
        out_dir.mkdir(parents=True, exist_ok=True)
        out_path = out_dir / Path(self.model.path).name
        external = any(Path(f) != Path(self.model.path) for f in (self.model.files or []))
        files = onnxio.save_onnx_model(proto, out_path, external=external)
        copy_companions(self.model.path, out_dir)
        return onnxio.onnx_output_handle(out_path, files, self.model, proto)

    def params_for(self, settings: Settings) -> dict[str, Any]:
        """The step's parameters that make exactly this model: every MatMul's bits, the calibration text named."""
        doc = self.params.model_dump(mode="json")
        doc["layer_bits"] = self.bits_for(settings)
        doc["perplexity_budget"] = 0.0
        src = self.run.cal.source
        if not doc.get("text_file") and src and Path(src).is_file():
            doc["text_file"] = str(src)   # smoothing was measured on it: the same windows make the same model
        return doc

    def saved_bytes(self, layer: str, level: str) -> float:
        if level == KEEP:
            return 0.0
        low = self.quant[level][0]
        return float(sum(4 * low[n].k * low[n].n - low[n].nbytes for n in self.members.get(layer, [])))

    # --- cheap scores ------------------------------------------------------------------------
    def cheap_scores(self, dataset: Any, cancel: Any) -> list[CheapScore]:
        from slimline.plugins.weight_only.sensitivity import relative_error

        r = self.run
        stats = r.stats or r._stats(r.lmg, r.sig, r.cal)   # on the smoothed graph: what is quantized
        by = {lin.node: lin for lin in r.lmg.linears}
        out = []
        for ly in self.layers:
            for lv in self.levels:
                cancel.raise_if_cancelled()
                low = self.quant[lv.key][0]
                w_err = out_err = 0.0
                for node in self.members[ly.name]:
                    w = r.lmg.weight(by[node].weight)
                    w_err += relative_error(w, low[node], None)
                    out_err += relative_error(w, low[node], stats[by[node].input].power)
                out.append(CheapScore(ly.name, lv.key, weight_error=w_err ** 0.5, output_error=out_err ** 0.5,
                                      note=f"on {r.cal.describe()}"))
        return out

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


__all__ = ["GROUP_LIMIT", "LEVEL_BITS", "WeightOnlyLayerwise"]
