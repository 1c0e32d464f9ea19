"""The weight-only quantization step for ONNX language models (MatMulNBits, GatherBlockQuantized).

Run: score the input on text windows (calibration and held-out check windows), quantize every
linear layer with onnxruntime's MatMulNBitsQuantizer, keep the most sensitive layers at 8 bits
until the perplexity budget is met, put the model together (a tied embedding reads the head's
packed weight), then check it on the held-out windows: a result whose perplexity is not a
number or rises past ``max_perplexity_increase`` is refused with the figures, never passed on.
The output keeps the input's file name and its companions (genai_config.json, tokenizer files),
so a genai builder folder stays a runnable genai folder.
"""
from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from slimline.core.errors import StepFailed
from slimline.core.handle import ModelHandle
from slimline.core.lm.onnx_lm import LMSignature, OnnxLM, lm_feeds, read_signature
from slimline.core.lm.score import LMComparison, compare
from slimline.core.lm.text import TextWindows
from slimline.core.plugin import Plugin, Problem, StepContext, StepOutput
from slimline.plugins._shared import onnxio
from slimline.plugins._shared.layers import matches_any
from slimline.plugins.weight_only import windows
from slimline.plugins.weight_only.graph import LMGraph, Plan, assemble, prepare
from slimline.plugins.weight_only.params import (
    AUTO_BLOCKS,
    HEAD_AUTO_BLOCK,
    Settings,
    WeightOnlyParams,
    auto_block_size,
    auto_head_block,
    promoted_block,
)
from slimline.plugins.weight_only.quant import Algorithm, QuantLayer, quantize_gptq, quantize_weights
from slimline.plugins.weight_only.record import LayerBits, SearchTrial, Timing, WeightOnlyRecord
from slimline.plugins.weight_only.search import greedy_order, search_promotions
from slimline.plugins.weight_only.sensitivity import activation_error, input_stats, relative_error
from slimline.plugins.weight_only.smooth import smooth

_PROTO_LIMIT = 1_800_000_000
DECODE_STEPS = 16


class QuantizeWeightOnly(Plugin):
    """Weight-only INT4/INT8 block-wise quantization of an ONNX LM, checked by perplexity."""

    id: ClassVar[str] = "builtin.quantize_weight_only"
    version: ClassVar[str] = "1"
    title: ClassVar[str] = "Quantize: weight-only INT4/INT8 (LLM)"
    category: ClassVar = "quantize"
    description: ClassVar[str] = (
        "Block-wise 4- or 8-bit weights for an ONNX language model (the genai model builder's folder or a "
        "logits export) with onnxruntime's MatMulNBits: RTN, HQQ, GPTQ or k-quant, the embedding and LM head "
        "included (a tied embedding is stored once), the most sensitive layers kept at 8 bits to meet a "
        "perplexity budget. Every result is checked on held-out text windows and refused when the LM broke.")
    input_formats: ClassVar = ("onnx",)
    output_format: ClassVar = "onnx"
    Params: ClassVar = WeightOnlyParams
    exclusion_field: ClassVar[str] = "nodes_to_exclude"
    # Sensitivity measures each unit alone at each width (every variant is cheap to assemble, but a probe of an
    # LM costs seconds): "all but one" would double the probes for what the search does not use.
    sensitivity_modes: ClassVar[tuple[str, ...]] = ("alone",)

    def layerwise(self, model: ModelHandle, params: Any, ctx: StepContext) -> Any:
        """Mixed 8/4-bit per MatMul (or per decoder block) for sensitivity and the budgeted search."""
        from slimline.plugins.weight_only.layerwise import WeightOnlyLayerwise

        return WeightOnlyLayerwise(self, model, params, ctx)

    # ------------------------------------------------------------------ pre-flight
    def check(self, model: ModelHandle, params: Any) -> list[Problem]:
        problems = self.check_format(model)
        if problems:
            return problems
        try:
            graph = onnxio.load_onnx_model(model, load_external=False)
        except Exception as exc:  # noqa: BLE001 - the message names the file
            return [Problem(f"cannot read the ONNX graph: {exc}", fix="re-export the model")]
        try:
            read_signature(graph, Path(model.path).parent, model.path)
        except StepFailed as exc:
            return [Problem(exc.message, fix=exc.hint)]
        inits = {t.name: t for t in graph.graph.initializer}
        producers = {o: n for n in graph.graph.node for o in n.output}

        def constant_2d(name: str) -> bool:
            t = inits.get(name)
            if t is None and name in producers and producers[name].op_type == "Transpose":
                t = inits.get(producers[name].input[0])
            return t is not None and len(t.dims) == 2 and t.data_type in (1, 10)

        matmuls = [n for n in graph.graph.node if n.op_type == "MatMul" and constant_2d(n.input[1])]
        nbits = sum(1 for n in graph.graph.node if n.op_type == "MatMulNBits")
        if not matmuls:
            if nbits:
                return [Problem(f"the model is already weight-only quantized ({nbits} MatMulNBits layers)",
                                fix="quantize the float model instead, or remove this step")]
            return [Problem("no MatMul with a constant float weight to quantize",
                            fix="use a float ONNX export of the language model")]
        left = [n for n in matmuls if not matches_any(n.name, params.nodes_to_exclude)]
        if not left:
            return [Problem(f"nodes_to_exclude leaves none of the {len(matmuls)} MatMul layers to quantize",
                            field="nodes_to_exclude", fix="exclude fewer layers")]
        if params.text_file and not Path(params.text_file).expanduser().is_file():
            return [Problem(f"text file not found: {params.text_file}", field="text_file",
                            fix="give a plain UTF-8 text file, or leave it empty")]
        return []

    # ------------------------------------------------------------------ run
    def run(self, model: ModelHandle, params: Any, ctx: StepContext) -> StepOutput:
        ctx.cancel.raise_if_cancelled()
        problems = [p for p in self.check(model, params) if p.severity == "error"]
        if problems:
            raise StepFailed(str(problems[0]), subject=self.id, hint=problems[0].fix or "fix the step's settings")
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".weight-only-", dir=ctx.work_dir))
        try:
            return _Run(self, model, params, ctx, tmp).go()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class _Run:
    """One run of the step (keeps the many intermediate figures off the plugin class)."""

    def __init__(self, plugin: QuantizeWeightOnly, model: ModelHandle, params: WeightOnlyParams, ctx: StepContext,
                 tmp: Path) -> None:
        self.plugin, self.model, self.params, self.ctx, self.tmp = plugin, model, params, ctx, tmp
        self.settings: Settings = params.resolved()
        self.folder = Path(model.path).parent
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.why: dict[str, str] = {}

    def source(self, proto: Any) -> Any:
        """What to open a session on: the serialized model, or a file when protobuf cannot hold it."""
        if sum(len(t.raw_data) for t in proto.graph.initializer) < _PROTO_LIMIT:
            return proto.SerializeToString()
        path = self.tmp / f"candidate-{len(list(self.tmp.iterdir()))}.onnx"
        onnxio.save_onnx_model(proto, path, external=True)
        return str(path)

    def setup(self, *, score: bool = True) -> None:
        """Read the model, cut the text windows, find the layers and smooth their inputs: what every model made
        from these parameters shares (the layer-wise search builds many from one setup); with ``score`` also the
        input model's figures on the windows and its timing, which the step's check compares with."""
        ctx, params, s = self.ctx, self.params, self.settings
        ctx.progress(0.01, "reading the model")
        proto = onnxio.load_onnx_model(self.model)
        self.sig = sig = read_signature(proto, self.folder, self.model.path)
        self.notes.append(f"settings: {s.describe()}; {sig.describe()}")

        ctx.progress(0.03, "text windows")
        ref_runner = OnnxLM(self.model.path, sig, threads=ctx.threads)
        self.cal, self.chk, wnotes = windows.calibration_and_check(params, ctx, self.folder, sig, ref_runner)
        self.notes += wnotes
        if self.cal.tokenizer == windows.SAMPLED:
            self.warnings.append("no text given: calibration and check ran on the model's own samples (a "
                                 "self-consistency check, not a dataset perplexity); give text_file for real figures")
        self.ref_cal: list[Any] = []
        self.ref_chk: list[Any] = []
        self.timing_before: Any = None
        if score:
            ctx.progress(0.05, f"scoring the input model on {self.chk.describe()}")
            self.ref_cal = ref_runner.score(self.cal, cancel=ctx.cancel).summaries
            self.ref_chk = ref_runner.score(self.chk, cancel=ctx.cancel).summaries
            self.timing_before = self._time(ref_runner, self.chk) if params.timing_runs else None
        del ref_runner

        ctx.progress(0.15, "finding the linear layers, the embedding and the LM head")
        self.lmg = lmg = prepare(proto, sig.logits, sig.vocab, sig.input_ids)
        self.targets = targets = self._targets(lmg)
        self._resolve_block(lmg, targets)
        self._padding_note(lmg, targets)
        self.stats: Any = None
        if s.smooth_alpha > 0:
            ctx.progress(0.16, "activation ranges on the calibration windows (smoothing)")
            stats = self._stats(lmg, sig, self.cal)
            done = smooth(lmg, set(targets), {k: v.max_abs for k, v in stats.items()}, s.smooth_alpha)
            self.notes.append(f"activation smoothing (α {s.smooth_alpha}): {len(done)} layer input(s) evened out, "
                              f"{sum(len(d.layers) for d in done)} layer(s) carry the scales (exact in float)")
            self.stats = None if done else stats  # the inputs changed: measured again if needed

    def explicit_bits(self, targets: list[str]) -> dict[str, int]:
        """Per-layer bits from ``layer_bits`` (first matching pattern; the rest at ``bits``), {} when unset."""
        given = self.params.layer_bits
        if not given:
            return {}
        out = {}
        for t in targets:
            hit = next((b for pat, b in given.items() if matches_any(t, (pat,))), None)
            out[t] = self.settings.bits if hit is None else int(hit)
        return out

    def go(self) -> StepOutput:
        ctx, s = self.ctx, self.settings
        self.setup(score=True)
        sig, cal, chk, lmg, targets = self.sig, self.cal, self.chk, self.lmg, self.targets
        ref_cal, ref_chk, timing_before, stats = self.ref_cal, self.ref_chk, self.timing_before, self.stats
        threads = ctx.threads
        mode = self._mode()
        low, high, emb_q = self._quantize(lmg, sig, targets, cal, mode, self.explicit_bits(targets))

        errors: dict[str, float] = {}
        trials: list[SearchTrial] = []
        chosen: set[str] = set()
        if mode is not None:
            ctx.progress(0.5, "sensitivity of each layer on the calibration windows")
            stats = stats or self._stats(lmg, sig, cal)
            if mode == "bits":
                errors = {t: relative_error(lmg.weight(_lin(lmg, t).weight), low[t],
                                            stats[_lin(lmg, t).input].power) for t in targets}
            else:
                errors = {t: activation_error(lmg.weight(_lin(lmg, t).weight), stats[_lin(lmg, t).input])
                          for t in targets}
            head = lmg.lm_head
            sizes = {t: _lin(lmg, t).params for t in targets}
            order = greedy_order(errors, sizes, s.max_promoted_share,
                                 first=(head.node,) if head is not None and mode == "bits" else ())

            def measure(k: int) -> LMComparison:
                ctx.cancel.raise_if_cancelled()
                plan = self._plan(lmg, targets, low, high, set(order[:k]), emb_q, mode)
                runner = OnnxLM(self.source(assemble(lmg, plan)), sig, threads=threads)
                got = runner.score(cal, ref_cal, cancel=ctx.cancel)
                return compare(ref_cal, got.summaries, got.logp_of_ref_top)

            what = "8 bits" if mode == "bits" else "float activations (accuracy_level 0)"
            ctx.progress(0.55, f"mixed precision: layers at {what} for a {100 * s.perplexity_budget:.1f} % budget")
            k, trials = search_promotions(order, sizes, measure, s.perplexity_budget,
                                         progress=lambda f: ctx.progress(0.55 + 0.3 * f, ""))
            chosen = set(order[:k])
            if not any(t.within_budget for t in trials):
                self.warnings.append(
                    f"perplexity budget {100 * s.perplexity_budget:.1f} % not met on the calibration windows with "
                    f"up to {100 * s.max_promoted_share:.0f} % of the weights at {what} (best "
                    f"{100 * min(t.perplexity_increase for t in trials):+.2f} %): raise max_promoted_share, use "
                    "smaller blocks" + (" or the int8 preset" if mode == "bits" else ""))
        elif s.bits == 4:
            errors = {t: relative_error(lmg.weight(_lin(lmg, t).weight), low[t], None) for t in targets if t in low}

        plan = self._plan(lmg, targets, low, high, chosen, emb_q, mode)
        out_model = assemble(lmg, plan)
        del lmg.model  # the float weights are no longer needed
        ctx.progress(0.86, f"checking the result on {chk.describe()}")
        runner = OnnxLM(self.source(out_model), sig, threads=threads)
        got = runner.score(chk, ref_chk, cancel=ctx.cancel)
        check = compare(ref_chk, got.summaries, got.logp_of_ref_top)
        self._refuse_if_broken(check, chk)
        timing = self._timing(timing_before, runner, chk) if timing_before is not None else None
        del runner

        ctx.progress(0.96, "writing the model")
        ctx.cancel.raise_if_cancelled()
        return self._write(out_model, sig, lmg, plan, errors, trials, check, cal, chk, timing)

    # ------------------------------------------------------------------ pieces
    def _targets(self, lmg: LMGraph) -> list[str]:
        p = self.params
        out = []
        for lin in lmg.linears:
            if matches_any(lin.node, p.nodes_to_exclude):
                self.why[lin.node] = "excluded (nodes_to_exclude)"
            elif lin.role == "lm_head" and not p.quantize_lm_head:
                self.why[lin.node] = "LM head left in float (quantize_lm_head is off)"
            else:
                out.append(lin.node)
        if not out:
            raise StepFailed("no linear layer left to quantize", subject=self.plugin.id,
                             hint="exclude fewer layers (nodes_to_exclude)")
        return out

    def _resolve_block(self, lmg: LMGraph, targets: list[str]) -> None:
        """A preset's automatic block sizes: the larger block when it divides every input size (fewer scales, no
        padding), else the smaller one; the LM head's (read whole for every token) 128 where it divides its input."""
        s = self.settings
        if not s.block_size:
            ks = {_lin(lmg, t).k for t in targets}
            big, small = AUTO_BLOCKS
            block = auto_block_size(ks)
            self.settings = s = replace(s, block_size=block)
            self.notes.append(f"block size {block} (automatic: {big} where it divides every layer's input size — "
                              f"{', '.join(map(str, sorted(ks)[:4]))} here — else {small})")
        head = lmg.lm_head
        if not s.head_block_size:
            k = _lin(lmg, head.node).k if head is not None and head.node in targets else 0
            head_block = auto_head_block(k, s.block_size) if k else s.block_size
            self.settings = replace(s, head_block_size=head_block)
            if head_block != s.block_size:
                self.notes.append(f"LM head in blocks of {head_block} (automatic: {HEAD_AUTO_BLOCK} divides its input "
                                  f"size {k}): decoding reads the whole head for every token, and fewer scales make "
                                  "that faster")

    def block_of(self, node: str) -> int:
        """The block size of layer ``node`` (the LM head may have its own)."""
        head = self.lmg.lm_head
        return self.settings.head_block_size if head is not None and node == head.node else self.settings.block_size

    def _by_block(self, names: list[str]) -> dict[int, list[str]]:
        groups: dict[int, list[str]] = {}
        for name in names:
            groups.setdefault(self.block_of(name), []).append(name)
        return groups

    def _padding_note(self, lmg: LMGraph, targets: list[str]) -> None:
        """Blocks that do not divide a layer's input size are padded with zeros, which are stored too."""
        b = self.settings.block_size
        lins = [_lin(lmg, t) for t in targets]
        real = sum(lin.k * lin.n for lin in lins)
        padded = sum(-(-lin.k // b) * b * lin.n for lin in lins)
        waste = padded / max(real, 1) - 1
        if waste > 0.02:
            sizes = sorted({lin.k for lin in lins if lin.k % b})
            msg = (f"block {b} does not divide the input size of some layers ({', '.join(map(str, sizes[:4]))}): "
                   f"{100 * waste:.0f} % more packed weights than values (zero padding); a block size that divides "
                   "them packs tighter")
            (self.warnings if waste > 0.05 else self.notes).append(msg)

    def _mode(self) -> str | None:
        """What the mixed-precision search spares layers with: 8-bit weights (4-bit runs), float activations
        (8-bit runs with int8 activations), or nothing (no budget)."""
        s = self.settings
        if s.perplexity_budget <= 0 or s.max_promoted_share <= 0 or self.params.layer_bits:
            return None
        if s.bits == 4:
            return "bits"
        return "accuracy" if s.accuracy_level == 4 else None

    def _stats(self, lmg: LMGraph, sig: LMSignature, cal: TextWindows) -> dict[str, Any]:
        return input_stats(lmg, sig, cal, threads=self.ctx.threads, block=self.settings.block_size,
                           session_source=self.source, cancel=self.ctx.cancel)

    def _quantize(self, lmg: LMGraph, sig: LMSignature, targets: list[str], cal: TextWindows, mode: str | None,
                  bits_of: dict[str, int] | None = None
                  ) -> tuple[dict[str, QuantLayer], dict[str, QuantLayer], QuantLayer | None]:
        """(each target at its bits, 8-bit versions for the mixed-precision search, the untied embedding).

        ``bits_of`` (layer_bits, or the layer-wise search): a layer at the step's ``bits`` is quantized the step's
        way (its algorithm), one at the other width by RTN (as the mixed-precision search's 8-bit layers), one at
        0 not at all. Each layer is quantized on its own, so any mix equals the layers taken from uniform runs."""
        s, ctx = self.settings, self.ctx
        by = {lin.node: lin for lin in lmg.linears}
        bits_of = bits_of or {}
        other = [t for t in targets if bits_of.get(t, s.bits) not in (s.bits, 0)]
        targets = [t for t in targets if bits_of.get(t, s.bits) == s.bits]

        def weight(node: str) -> np.ndarray:
            return lmg.weight(by[node].weight)

        def prog(lo: float, hi: float) -> Any:
            return lambda f: ctx.progress(lo + (hi - lo) * f, "")

        ctx.progress(0.16, f"quantizing {len(targets)} layers: {s.describe()}")
        groups = self._by_block(targets)   # (empty when every layer is at the other width, or float)
        if s.algorithm == "gptq":
            low: dict[str, QuantLayer] = {}
            feeds = [lm_feeds(sig, cal.ids[w:w + 1]) for w in range(cal.count)] if groups else []
            for block, group in groups.items():
                odd = [t for t in group if (-(-by[t].k // block)) % 2]
                even = [t for t in group if t not in odd]
                if even:
                    low.update(quantize_gptq(lmg.model, {t: by[t].output for t in even}, feeds, block_size=block,
                                             symmetric=s.symmetric))
                if odd:  # onnxruntime's GPTQ packs zero points wrongly for an odd number of blocks per row
                    low.update(self._quantize_groups({block: odd}, weight, algorithm="rtn", bits=4,
                                                     symmetric=s.symmetric))
                    for t in odd:
                        self.why[t] = "RTN instead of GPTQ (an odd number of blocks per row)"
        else:
            low = self._quantize_groups(groups, weight, algorithm=s.algorithm, bits=s.bits, symmetric=s.symmetric,
                                        progress=prog(0.16, 0.4))
        for b in sorted({bits_of[t] for t in other}):
            wide = [t for t in other if bits_of[t] == b]
            low.update(self._promoted(wide, weight) if b == 8 else
                       self._quantize_groups(self._by_block(wide), weight, algorithm="rtn", bits=b,
                                             symmetric=s.symmetric))
        head = lmg.lm_head
        emb = lmg.embedding
        if (emb is not None and emb.tied and head is not None and head.node in low and self.params.quantize_embeddings
                and not low[head.node].integer_zero_points):
            low[head.node] = quantize_weights([head.node], weight, algorithm="rtn", bits=low[head.node].bits,
                                              block_size=self.block_of(head.node), symmetric=s.symmetric)[head.node]
            self.why[head.node] = (f"RTN instead of {s.algorithm.upper()}: the tied embedding reads this weight and "
                                   "GatherBlockQuantized takes integer zero points only")
        emb_q = None
        if emb is not None and not emb.tied and self.params.quantize_embeddings:
            algo = s.algorithm if s.algorithm in ("rtn", "k_quant") else "rtn"
            emb_q = quantize_weights(["embedding"], lambda _: lmg.embedding_table(), algorithm=algo, bits=s.bits,
                                     block_size=s.block_size, symmetric=s.symmetric)["embedding"]
        high: dict[str, QuantLayer] = {}
        if mode == "bits":
            ctx.progress(0.4, "8-bit versions for mixed precision")
            high = self._promoted(targets, weight, progress=prog(0.4, 0.5))
        return low, high, emb_q

    def _quantize_groups(self, groups: dict[int, list[str]], weight: Any, *, algorithm: Algorithm, bits: int,
                         symmetric: bool, progress: Any = None) -> dict[str, QuantLayer]:
        """Each group (block size → layer names) quantized by a data-free algorithm in its own block size."""
        out: dict[str, QuantLayer] = {}
        for i, (block, group) in enumerate(groups.items()):
            part = (lambda f, i=i: progress((i + f) / len(groups))) if progress is not None else None
            out.update(quantize_weights(group, weight, algorithm=algorithm, bits=bits, block_size=block,
                                        symmetric=symmetric, cancel=self.ctx.cancel, progress=part))
        return out

    def _promoted(self, names: list[str], weight: Any, progress: Any = None) -> dict[str, QuantLayer]:
        """8-bit versions of ``names``: the layers a 4-bit run keeps at 8 bits (promoted_block, symmetric), or the
        layers of an 8-bit run quantized the other way (its own blocks and symmetry)."""
        if self.settings.bits == 8:
            return self._quantize_groups(self._by_block(names), weight, algorithm="rtn", bits=8,
                                         symmetric=self.settings.symmetric, progress=progress)
        groups: dict[int, list[str]] = {}
        for name in names:
            groups.setdefault(promoted_block(_lin(self.lmg, name).k, self.block_of(name)), []).append(name)
        return self._quantize_groups(groups, weight, algorithm="rtn", bits=8, symmetric=True, progress=progress)

    def _plan(self, lmg: LMGraph, targets: list[str], low: dict[str, QuantLayer], high: dict[str, QuantLayer],
              chosen: set[str], emb_q: QuantLayer | None, mode: str | None) -> Plan:
        """The model to assemble: ``chosen`` layers at 8 bits (mode "bits") or with float activations."""
        bits = mode == "bits"
        layers: dict[str, QuantLayer | None] = {t: (high[t] if bits and t in chosen else low.get(t))
                                                for t in targets}   # (not in low: layer_bits 0, float)
        return Plan(layers=layers, embedding=emb_q, accuracy_level=self.settings.accuracy_level,
                    node_accuracy={} if bits else {t: 0 for t in chosen},
                    tied_embedding=self.params.quantize_embeddings)

    def _time(self, runner: OnnxLM, chk: TextWindows) -> tuple[list[float], list[float] | None]:
        ids = chk.ids[0]
        return runner.time_prefill(ids, self.params.timing_runs), runner.time_decode(ids, DECODE_STEPS)

    def _timing(self, before: tuple[list[float], list[float] | None], runner: OnnxLM, chk: TextWindows) -> Timing:
        """Medians before/after; "slower" only when the after's lower quartile is above the before's upper one."""
        after = self._time(runner, chk)
        slower = []
        if _clearly_slower(before[0], after[0]):
            slower.append("prefill")
        if before[1] and after[1] and _clearly_slower(before[1], after[1]):
            slower.append("decode")
        return Timing(threads=runner.threads, prefill_tokens=int(chk.ids.shape[1]),
                      prefill_ms_before=1e3 * float(np.median(before[0])),
                      prefill_ms_after=1e3 * float(np.median(after[0])),
                      decode_ms_before=1e3 * float(np.median(before[1])) if before[1] else None,
                      decode_ms_after=1e3 * float(np.median(after[1])) if after[1] else None,
                      slower=" and ".join(slower))

    def _refuse_if_broken(self, check: LMComparison, chk: TextWindows) -> None:
        inc = check.increase
        figures = (f"perplexity {check.original.value:.3f} → {check.perplexity.value:.3f} "
                   f"({100 * inc:+.2f} %, 95 % interval {100 * check.increase_low:+.2f} … "
                   f"{100 * check.increase_high:+.2f} %), next-token agreement {check.agreement:.3f} on "
                   f"{chk.describe()}")
        if not math.isfinite(check.perplexity.value) or not math.isfinite(inc):
            raise StepFailed(f"the quantized LM is broken: {figures}; the model was not passed on",
                             subject=self.plugin.id,
                             hint="use 8 bits or smaller blocks, exclude the layers named in the log, or report "
                                  "the model: onnxruntime produced non-finite logits")
        if inc > self.params.max_perplexity_increase:
            raise StepFailed(
                f"the quantized LM is too far from the input: {figures}, above the allowed "
                f"{100 * self.params.max_perplexity_increase:.0f} %; the model was not passed on",
                subject=self.plugin.id,
                hint="raise perplexity_budget / max_promoted_share (more layers at 8 bits), use smaller blocks, "
                     "another algorithm or the int8 preset; or raise max_perplexity_increase if this is acceptable")

    def _write(self, out_model: Any, sig: LMSignature, lmg: LMGraph, plan: Plan, errors: dict[str, float],
               trials: list[SearchTrial], check: LMComparison, cal: TextWindows, chk: TextWindows,
               timing: Timing | None) -> StepOutput:
        s = self.settings
        out_path = self.ctx.output_path(Path(self.model.path).name)
        src_external = any(Path(f) != Path(self.model.path) for f in (self.model.files or []))
        files = onnxio.save_onnx_model(out_model, out_path, external=src_external)
        from slimline.core.lm.genai import copy_companions

        copied = copy_companions(self.model.path, out_path.parent)
        layers = self._layer_rows(lmg, plan, errors)
        before = sum(Path(f).stat().st_size for f in (self.model.files or [self.model.path]) if Path(f).is_file())
        after = sum(f.stat().st_size for f in files)
        record = WeightOnlyRecord(settings=s.describe(), lm=sig.describe(), calibration=cal.describe(),
                                  check_windows=chk.describe(), check=check, layers=layers, search=trials,
                                  budget=s.perplexity_budget, bytes_before=before, bytes_after=after, timing=timing,
                                  companions=copied)
        from slimline.core.fsutil import atomic_write_text

        atomic_write_text(out_path.parent / "weight_only.json", record.model_dump_json(indent=1))
        handle = onnxio.onnx_output_handle(out_path, files, self.model, out_model)
        kept = {k: v for k, v in self.model.dim_defaults.items() if k in handle.dim_defaults}
        if kept:  # the dims the user set (--dim) hold for the quantized model too: same inputs, same meaning
            handle = handle.with_dims(**kept)
        return _output(handle, record, self.notes, self.warnings, trials, s)

    def _layer_rows(self, lmg: LMGraph, plan: Plan, errors: dict[str, float]) -> list[LayerBits]:
        rows: list[LayerBits] = []
        for lin in lmg.linears:
            q = plan.layers.get(lin.node)
            why = self.why.get(lin.node, "")
            level = plan.node_accuracy.get(lin.node, plan.accuracy_level) if q else None
            if self.params.layer_bits and lin.node in plan.layers:
                why = why or (f"{q.bits} bits (layer_bits)" if q is not None else "float (layer_bits 0)")
            if q is not None and q.bits == 8 and self.settings.bits == 4:
                why = why or "kept at 8 bits (among the most sensitive on the calibration windows)"
            if q is not None and lin.node in plan.node_accuracy:
                why = why or "float activations (accuracy_level 0): among the most sensitive to int8 activations"
            rows.append(LayerBits(name=lin.node, kind=lin.role, decoder_block=lin.block, shape=(lin.k, lin.n),
                                  bits=q.bits if q else None, accuracy_level=level, algorithm=q.algorithm if q else "",
                                  block_size=q.block_size if q else None, sensitivity=errors.get(lin.node),
                                  bytes=q.nbytes if q else lin.params * 4, why=why))
        emb = lmg.embedding
        if emb is not None:
            head_q = plan.layers.get(lmg.lm_head.node) if lmg.lm_head is not None else None
            if emb.tied and head_q is not None and head_q.integer_zero_points and self.params.quantize_embeddings:
                rows.append(LayerBits(name=emb.node, kind="embedding", decoder_block=None,
                                      shape=(emb.vocab, emb.hidden), bits=head_q.bits, algorithm=head_q.algorithm,
                                      block_size=head_q.block_size, sensitivity=None, bytes=0,
                                      why="tied: reads the LM head's quantized weight (stored once)"))
            elif plan.embedding is not None:
                q = plan.embedding
                rows.append(LayerBits(name=emb.node, kind="embedding", decoder_block=None,
                                      shape=(emb.vocab, emb.hidden), bits=q.bits, algorithm=q.algorithm,
                                      block_size=q.block_size, sensitivity=None, bytes=q.nbytes))
            else:
                why = ("quantize_embeddings is off" if not self.params.quantize_embeddings else
                       "tied to a float LM head" if emb.tied else "left in float")
                rows.append(LayerBits(name=emb.node, kind="embedding", decoder_block=None,
                                      shape=(emb.vocab, emb.hidden), bits=None, algorithm="", block_size=None,
                                      sensitivity=None, bytes=0 if emb.tied else emb.vocab * emb.hidden * 4,
                                      why=why))
        return rows


def _clearly_slower(before: list[float], after: list[float]) -> bool:
    """The after's lower quartile above the before's upper one (by 5 %): slower beyond run-to-run noise."""
    return bool(before and after and np.percentile(after, 25) > 1.05 * np.percentile(before, 75))


def _lin(lmg: LMGraph, node: str) -> Any:
    return next(lin for lin in lmg.linears if lin.node == node)


def _output(handle: ModelHandle, record: WeightOnlyRecord, notes: list[str], warnings: list[str],
            trials: list[SearchTrial], s: Settings) -> StepOutput:
    c = record.check
    ratio = record.bytes_after / max(record.bytes_before, 1)
    notes = list(notes)
    notes.append(f"layers: {record.bits_summary()}")
    high = [r for r in record.layers if r.bits == 8 and s.bits == 4 and r.kind != "embedding"]
    if trials:
        best = next((tr for tr in trials if tr.promoted_layers == len(high) and tr.within_budget), None)
        notes.append(f"mixed precision: {len(high)} layer(s) kept at 8 bits after {len(trials)} measured "
                     f"candidate(s) for a {100 * s.perplexity_budget:.1f} % budget on {record.calibration}"
                     + (f" (calibration increase {100 * best.perplexity_increase:+.2f} %)" if best else ""))
    notes.append(f"size {record.bytes_before / 1e6:.2f} MB → {record.bytes_after / 1e6:.2f} MB ({ratio:.3f}×)")
    notes.append(f"check on {record.check_windows}: perplexity {c.original.value:.3f} → {c.perplexity.value:.3f} "
                 f"({100 * c.increase:+.2f} %, 95 % interval {100 * c.increase_low:+.2f} … "
                 f"{100 * c.increase_high:+.2f} %), next-token agreement {c.agreement:.3f}, "
                 f"KL(top-{c.top_k} + rest, a lower bound) {c.kl_topk:.4f} nats/token")
    t = record.timing
    metrics: dict[str, float] = {
        "size_ratio": ratio, "bytes_before": float(record.bytes_before), "bytes_after": float(record.bytes_after),
        "perplexity_before": c.original.value, "perplexity_after": c.perplexity.value,
        "perplexity_increase": c.increase, "perplexity_increase_low": c.increase_low,
        "perplexity_increase_high": c.increase_high, "next_token_agreement": c.agreement, "kl_topk": c.kl_topk,
        "check_tokens": float(c.perplexity.tokens), "promoted_layers": float(len(high)),
        "quantized_layers": float(sum(1 for r in record.layers if r.bits)),
    }
    if t is not None:
        lat = t.prefill_ms_after / max(t.prefill_ms_before, 1e-9)
        metrics.update({"prefill_ms_before": t.prefill_ms_before, "prefill_ms_after": t.prefill_ms_after,
                        "latency_ratio": lat, "latency_threads": float(t.threads)})
        line = (f"median prefill of {t.prefill_tokens} tokens, {t.threads} thread(s): {t.prefill_ms_before:.1f} → "
                f"{t.prefill_ms_after:.1f} ms ({lat:.2f}×)")
        if t.decode_ms_before is not None and t.decode_ms_after is not None:
            dec = t.decode_ms_after / max(t.decode_ms_before, 1e-9)
            metrics.update({"decode_ms_before": t.decode_ms_before, "decode_ms_after": t.decode_ms_after,
                            "decode_latency_ratio": dec})
            line += (f"; decode {t.decode_ms_before:.1f} → {t.decode_ms_after:.1f} ms/token ({dec:.2f}×, "
                     f"median of {DECODE_STEPS - 1} steps)")
        notes.append(line)
        if t.slower:
            warnings = warnings + [f"SLOWER: {t.slower} beyond the timing noise ({line}); accuracy_level 4 runs "
                                   "the int8 kernels, HQQ's float zero points the slow path"]
    if ratio > 1.0:
        warnings = warnings + [f"BIGGER: the output is {ratio:.2f}× the input size"]
    met = any(tr.within_budget for tr in trials)
    if c.increase > s.perplexity_budget > 0 and (met or not trials):  # (a missed search already said so)
        warnings = warnings + [f"perplexity rose {100 * c.increase:+.2f} % on the check windows, above the "
                               f"{100 * s.perplexity_budget:.1f} % budget"
                               + (" (met on the calibration windows)" if met else "")]
    if record.companions:
        notes.append("copied beside the model: " + ", ".join(record.companions))
    return StepOutput(model=handle, metrics=metrics, notes=notes, warnings=warnings,
                      tables={"weight_only_layers": record.layer_rows(),
                              "mixed_precision_search": [tr.model_dump() for tr in trials]})

