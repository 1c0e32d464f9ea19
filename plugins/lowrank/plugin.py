"""The low-rank factorization step (torch and ONNX)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from slimline.core.errors import StepFailed
from slimline.core.handle import ModelHandle
from slimline.core.plugin import Plugin, PluginParams, Problem, StepContext, StepOutput
from slimline.plugins._shared import common, lm, onnxio
from slimline.plugins._shared.layers import layer_patterns, matches_any, selection_problems
from slimline.plugins.lowrank.svd import Factorization, RankRule


class LowRankParams(PluginParams):
    rank_mode: Literal["energy", "ratio"] = Field(
        "energy", description="Pick each layer's rank by kept energy (Σσ² of kept singular values / total) "
        "or as a fraction of its full rank")
    energy: float = Field(0.9, gt=0.0, le=1.0, description="Fraction of squared singular values to keep "
                          "(rank_mode='energy')")
    ratio: float = Field(0.5, gt=0.0, le=1.0, description="Kept rank as a fraction of full rank (rank_mode='ratio')")
    overrides: dict[str, int | float] = Field(
        default_factory=dict, description="Per-layer rule, name or glob → an integer rank (e.g. 32) or an "
        "energy fraction in (0, 1] (e.g. 0.95)")
    include_conv: bool = Field(False, description="Also factorize Conv2d layers (torch only): k×k conv to r "
                               "channels, then 1×1 conv")
    skip: list[str] = layer_patterns("Layer names or glob patterns to leave alone")
    keep_output_layer: bool = Field(True, description="Leave the layer producing the output (the classifier) "
                                    "alone: it is small and a low rank there caps what the model can tell apart")
    data_aware: bool = Field(False, description="Choose the kept directions by the layer's output error on "
                             "calibration data instead of weight energy (needs a calibration dataset)")
    data_aware_method: Literal["whiten", "diag"] = Field(
        "whiten", description="'whiten': input covariance (Cholesky), optimal output error; 'diag': input RMS "
        "per feature only (cheaper, ignores correlations)")
    calibration_batches: int = Field(8, ge=1, le=1000, description="Batches of calibration data for data_aware")
    batch_size: int = Field(32, ge=1, le=4096, description="Batch size for data_aware statistics")
    calibration_windows: int = Field(16, ge=1, le=4096, description="Causal LMs with a text file: token windows "
                                     "of calibration text for data_aware (instead of batches of rows)")
    window_length: int = Field(128, ge=8, le=8192, description="Causal LMs with a text file: tokens per window")

    @field_validator("overrides")
    @classmethod
    def _check_overrides(cls, v: dict[str, int | float]) -> dict[str, int | float]:
        for name, rule in v.items():
            if isinstance(rule, bool):
                raise ValueError(f"overrides[{name!r}]: expected a rank or an energy, got {rule}")
            if isinstance(rule, int) and rule < 1:
                raise ValueError(f"overrides[{name!r}]: rank must be ≥ 1, got {rule}")
            if isinstance(rule, float) and not 0.0 < rule <= 1.0:
                raise ValueError(f"overrides[{name!r}]: energy must be in (0, 1], got {rule} "
                                 "(write an integer for a rank)")
        return v


class LowRankFactorize(Plugin):
    """SVD-factorize Linear (and optionally Conv) layers; reports ranks, energy and params saved."""

    id: ClassVar[str] = "builtin.lowrank"
    version: ClassVar[str] = "1"
    title: ClassVar[str] = "Low-rank factorization (SVD)"
    category: ClassVar[str] = "lowrank"  # type: ignore[assignment]
    description: ClassVar[str] = (
        "Replaces each Linear layer (optionally Conv2d; ONNX: MatMul/Gemm with a constant weight) by two "
        "thinner layers from a truncated SVD, with the rank chosen by kept energy or ratio. Layers where that "
        "would not save parameters are skipped. Optional data-aware SVD weights inputs by calibration "
        "statistics. Accuracy drops with low energy: recover with a Distill step.")
    input_formats: ClassVar[tuple[str, ...]] = ("torch", "onnx")  # type: ignore[assignment]
    output_format: ClassVar[str] = "torch"  # type: ignore[assignment]
    preserves_format: ClassVar[bool] = True
    Params: ClassVar[type[PluginParams]] = LowRankParams

    # The parameter that leaves layers alone (slimline.core.sensitivity: click-to-exclude, the search).
    exclusion_field: ClassVar[str] = "skip"

    def layerwise(self, model: ModelHandle, params: PluginParams, ctx: StepContext) -> Any:
        """This step one layer at a time (slimline.core.sensitivity.protocol.Layerwise)."""
        from slimline.plugins.lowrank.layerwise import LowRankLayerwise

        return LowRankLayerwise(self, model, params, ctx)

    def check(self, model: ModelHandle, params: PluginParams) -> list[Problem]:
        problems = self.check_format(model)
        if problems:
            return problems
        assert isinstance(params, LowRankParams)
        if model.family == "torch":
            def none_found(layers: list[tuple[str, str]]) -> Problem:
                what = "Linear or Conv2d" if params.include_conv else "Linear"
                fix = "" if params.include_conv or not any(t == "Conv2d" for _, t in layers) \
                    else "turn on include_conv to factorize the Conv layers"
                return Problem(f"no {what} layers to factorize", fix=fix)

            problems += selection_problems(
                model, {"Linear"} | ({"Conv2d"} if params.include_conv else set()), params.skip,
                none_found=none_found, all_excluded=Problem("the skip list covers every layer", field="skip"))
        elif model.family == "onnx":
            try:
                proto = onnxio.load_onnx_model(model, load_external=False)
                inits = {i.name for i in proto.graph.initializer}
                if not any(n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in inits
                           for n in proto.graph.node):
                    problems.append(Problem("no MatMul/Gemm with a constant weight to factorize"))
            except Exception as exc:
                problems.append(Problem(f"cannot read the ONNX graph: {exc}"))
            if params.include_conv:
                problems.append(Problem("Conv factorization is torch-only; ONNX Conv layers are left alone",
                                        severity="warning", field="include_conv"))
        if params.data_aware:
            problems.append(Problem("data_aware needs a calibration (or training) dataset", severity="warning",
                                    field="data_aware", fix="add calibration data to the run"))
        return problems

    def _rule_for(self, p: LowRankParams) -> Any:
        default = RankRule("energy", p.energy) if p.rank_mode == "energy" else RankRule("ratio", p.ratio)

        def rule(name: str) -> RankRule:
            value = p.overrides.get(name)
            if value is None:
                value = next((v for k, v in p.overrides.items() if matches_any(name, [k])), None)
            if value is None:
                return default
            return RankRule("rank", value) if isinstance(value, int) else RankRule("energy", float(value))
        return rule

    def run(self, model: ModelHandle, params: PluginParams, ctx: StepContext) -> StepOutput:
        assert isinstance(params, LowRankParams)
        ctx.cancel.raise_if_cancelled()
        if model.family == "torch":
            return self._run_torch(model, params, ctx)
        if model.family == "onnx":
            return self._run_onnx(model, params, ctx)
        raise StepFailed(f"cannot factorize a {model.family} model", subject=self.id,
                         hint="open a runnable torch or ONNX model")

    # --- torch ------------------------------------------------------------------------------
    def _run_torch(self, model: ModelHandle, p: LowRankParams, ctx: StepContext) -> StepOutput:
        from slimline.core.torchmodel import module_to_tree
        from slimline.plugins.lowrank import torch_lr

        ctx.progress(0.0, "loading model")
        module = common.load_module(model).eval()
        params_before = sum(x.numel() for x in module.parameters())
        out_layer = common.output_layer_name(module, common.example_inputs(model)) if p.keep_output_layer else None
        targets, skipped = torch_lr.find_targets(module, include_conv=p.include_conv, skip=p.skip,
                                                 rule_for=self._rule_for(p))
        if out_layer is not None and any(t.name == out_layer for t in targets):
            targets = [t for t in targets if t.name != out_layer]
            skipped[out_layer] = (type(module.get_submodule(out_layer)).__name__,
                                  "output layer (keep_output_layer is on)")
        if not targets:
            left = f" ({len(skipped)} left alone by the settings)" if skipped else ""
            raise StepFailed("no layers to factorize" + left,
                             subject=f"{self.id}.skip", hint="check skip / include_conv, or use another step")
        scales: dict[str, Any] = {}
        extra_notes: list[str] = []
        if p.data_aware:
            ctx.progress(0.02, "collecting activation statistics")
            batches = _lm_text_batches(model, p, ctx, extra_notes)
            if batches is None:
                batches = _torch_batches(model, _calibration(ctx, self.id), p)
            scales = torch_lr.input_stats(module, targets, batches, ctx.cancel.raise_if_cancelled,
                                          method=p.data_aware_method)
        rows: list[dict[str, Any]] = []
        replacements: dict[str, Any] = {}
        done = 0
        for i, t in enumerate(targets):
            ctx.cancel.raise_if_cancelled()
            ctx.progress(0.05 + 0.8 * i / len(targets), f"factorizing {t.name}")
            f = torch_lr.factor_target(t, scales.get(t.name))
            m, n = torch_lr.weight_matrix(t).shape
            rows.append(_row(t.name, t.op, [m, n], f, t.rule, bias=t.module.bias is not None))
            if f.first is None:
                continue
            new = torch_lr.build_replacement(t, f)
            torch_lr.set_submodule(module, t.name, new)
            replacements[t.name] = module_to_tree(new)
            done += 1
        rows += [_skip_row(n, op, why) for n, (op, why) in skipped.items()]
        params_after = sum(x.numel() for x in module.parameters())
        ctx.cancel.raise_if_cancelled()
        ctx.progress(0.9, "saving")
        out = common.save_module(module, model, ctx.output_path("lowrank.safetensors"),
                                 replacements=replacements)
        return self._report(out, rows, params_before, params_after, done, p, ctx, extra_notes)

    # --- onnx -------------------------------------------------------------------------------
    def _run_onnx(self, model: ModelHandle, p: LowRankParams, ctx: StepContext) -> StepOutput:
        from slimline.plugins.lowrank import onnx_lr
        from slimline.plugins.lowrank.svd import factorize

        ctx.progress(0.0, "loading model")
        proto = onnxio.load_onnx_model(model)
        external = onnxio.uses_external_data(proto)
        params_before = _onnx_params(proto)
        targets, skipped = onnx_lr.find_targets(proto, skip=p.skip, rule_for=self._rule_for(p))
        if p.keep_output_layer:  # the last MatMul/Gemm with a constant weight feeds the output
            inits = {i.name for i in proto.graph.initializer}
            last = next((n for n in reversed(proto.graph.node) if n.op_type in ("MatMul", "Gemm")
                         and len(n.input) > 1 and n.input[1] in inits), None)
            name = (last.name or last.input[1]) if last is not None else None
            if last is not None and name is not None and any(t.name == name for t in targets):
                targets = [t for t in targets if t.name != name]
                skipped[name] = (last.op_type, "output layer (keep_output_layer is on)")
        if not targets:
            raise StepFailed("no MatMul/Gemm with a constant weight to factorize", subject=f"{self.id}.skip",
                             hint="check the skip list, or factorize the torch model before export")
        scales: dict[str, Any] = {}
        if p.data_aware:
            ctx.progress(0.02, "collecting activation statistics")
            ds = _calibration(ctx, self.id)
            batches = (feeds for bi, (feeds, _) in zip(range(p.calibration_batches), ds.batches(p.batch_size)))
            scales = onnx_lr.input_stats(proto, targets, batches, ctx.cancel.raise_if_cancelled,
                                         method=p.data_aware_method)
        rows: list[dict[str, Any]] = []
        done: list[tuple[Any, Factorization]] = []
        for i, t in enumerate(targets):
            ctx.cancel.raise_if_cancelled()
            ctx.progress(0.05 + 0.8 * i / len(targets), f"factorizing {t.name}")
            st = scales.get(t.name) or {}
            f = factorize(t.matrix, t.rule, scale=st.get("rms"), gram=st.get("gram"))
            has_bias = t.op == "Gemm" and len(t.node.input) > 2 and bool(t.node.input[2])
            rows.append(_row(t.name, t.op, list(t.matrix.shape), f, t.rule, bias=has_bias))
            if f.first is not None:
                done.append((t, f))
        rows += [_skip_row(n, op, why) for n, (op, why) in skipped.items()]
        onnx_lr.rewrite(proto, done)
        params_after = _onnx_params(proto)
        ctx.cancel.raise_if_cancelled()
        ctx.progress(0.9, "saving")
        path = ctx.output_path("lowrank.onnx")
        files = onnxio.save_onnx_model(proto, path, external=external)
        out = onnxio.onnx_output_handle(path, files, model, proto)
        return self._report(out, rows, params_before, params_after, len(done), p, ctx)

    # --- report -----------------------------------------------------------------------------
    def _report(self, out: ModelHandle, rows: list[dict[str, Any]], before: int, after: int, done: int,
                p: LowRankParams, ctx: StepContext, extra_notes: list[str] | None = None) -> StepOutput:
        ratio = after / before if before else 1.0
        fact = [r for r in rows if r["status"] == "factorized"]
        metrics = {"params_before": float(before), "params_after": float(after), "param_ratio": ratio,
                   "layers_factorized": float(done), "layers_skipped": float(len(rows) - done)}
        if fact:
            metrics["min_energy_kept"] = min(r["energy_kept"] for r in fact)
        rule = f"energy {p.energy:g}" if p.rank_mode == "energy" else f"{p.ratio:g}× full rank"
        notes = [f"Factorized {done} of {len(rows)} layers ({rule}"
                 + (f", data-aware SVD ({p.data_aware_method}) from calibration inputs" if p.data_aware
                    else ", plain SVD")
                 + (f", {len(p.overrides)} override(s)" if p.overrides else "")
                 + f"): parameters {before:,} → {after:,} ({ratio:.2f}×).",
                 ("Kept energy is measured on the data-weighted spectrum (the layer's output energy on the "
                  "calibration inputs), not on the raw weights." if p.data_aware else
                  "Kept energy is a weight-space measure, not accuracy: low energy on trained layers breaks the "
                  "model; try data_aware, or recover with a Distill step.")] + list(extra_notes or [])
        warnings = []
        skipped = [r for r in rows if r["status"] == "skipped"]
        if skipped:
            warnings.append(f"{len(skipped)} layer(s) not factorized: "
                            + "; ".join(f"{r['layer']} ({r['reason']})" for r in skipped[:4])
                            + (" …" if len(skipped) > 4 else ""))
        if done == 0:
            warnings.append("nothing was factorized: lower the energy/ratio so ranks fall below break-even")
        if after > before:
            warnings.append("the model got bigger")
        ctx.progress(1.0, "done")
        return StepOutput(model=out, metrics=metrics, notes=notes, warnings=warnings, tables={"lowrank": rows})


def _row(name: str, op: str, shape: list[int], f: Factorization, rule: RankRule, *, bias: bool) -> dict[str, Any]:
    m, n = shape
    b = m if bias else 0
    after = f.rank * (m + n) + b if f.first is not None else m * n + b
    return {"layer": name, "op": op, "shape": shape, "rule": rule.describe(), "rank": f.rank,
            "full_rank": f.full_rank, "energy_kept": round(f.energy_kept, 6), "params_before": m * n + b,
            "params_after": after, "status": "factorized" if f.first is not None else "skipped",
            "reason": f.skip_reason}


def _skip_row(name: str, op: str, why: str) -> dict[str, Any]:
    return {"layer": name, "op": op, "shape": [], "rule": "", "rank": None, "full_rank": None,
            "energy_kept": None, "params_before": None, "params_after": None, "status": "skipped", "reason": why}


def _calibration(ctx: StepContext, plugin_id: str) -> Any:
    data = ctx.data
    for attr in ("calibration", "train"):
        ds = getattr(data, attr, None) if data is not None else None
        if ds is not None and len(ds):
            return ds
    raise StepFailed("data_aware SVD needs calibration data", subject=f"{plugin_id}.data_aware",
                     hint="add a calibration dataset to the run, or turn data_aware off")


def _lm_text_batches(handle: ModelHandle, p: LowRankParams, ctx: StepContext, notes: list[str]) -> Any:
    """Calibration token windows for a causal LM when the run's data is a text file; None otherwise."""
    if not lm.is_causal_lm(handle) or lm.text_source(ctx, ("calibration", "train", "eval")) is None:
        return None
    win, src = lm.windows(ctx, handle, ("calibration", "train", "eval"), length=p.window_length,
                          count=p.calibration_windows, what="data-aware SVD")
    notes.append(f"data-aware statistics from {win.describe()} (the {src.role} data)"
                 + ("; this overlaps the text the evaluation scores, so the figures after this step are optimistic"
                    if src.overlaps_eval else "; after the text the evaluation scores" if src.same_as_eval else ""))
    return ({"input_ids": ids} for ids in lm.id_batches(win.ids, 4))


def _torch_batches(handle: ModelHandle, ds: Any, p: LowRankParams) -> Iterator[Any]:
    for bi, (feeds, _) in enumerate(ds.batches(p.batch_size)):
        if bi >= p.calibration_batches:
            break
        yield common.batch_feeds(handle, feeds)


def _onnx_params(proto: Any) -> int:
    import numpy as np

    return int(sum(int(np.prod(t.dims)) if len(t.dims) else 1 for t in proto.graph.initializer))
