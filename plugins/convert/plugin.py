"""Convert a torch model to ONNX and prove the export is faithful.

An export that silently changes outputs is the worst kind of failure, so the
step runs the torch model and the ONNX file on the same inputs and fails when
they disagree beyond the tolerance. The export itself is the engine's
(``slimline.core.onnx_export``), shared with ``slimline export``.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from slimline.core.errors import SlimlineError, StepFailed
from slimline.core.handle import Family, ModelHandle
from slimline.core.lm.builder_compat import MIN_CONTEXT, context_length_problem, model_context_length
from slimline.core.plugin import Category, Plugin, PluginParams, Problem, StepContext, StepOutput


class ConvertParams(PluginParams):
    opset: int = Field(18, ge=7, le=23, description="ONNX opset to target (checked after export)")
    exporter: Literal["dynamo", "legacy"] = Field(
        "dynamo", description="torch.export-based exporter (recommended) or the legacy TorchScript tracer "
                              "(faster, deprecated; used automatically for TorchScript inputs)")
    dynamic_batch: bool = Field(True, description="Make the first input dimension dynamic")
    parity_atol: float = Field(1e-3, gt=0, le=10,
                               description="Max abs difference allowed between torch and ONNX outputs")
    parity_samples: int = Field(16, ge=1, le=4096, description="Rows used for the parity check")
    lm_method: Literal["genai", "logits"] = Field(
        "genai", description="Causal language models: 'genai' = onnxruntime-genai model builder (KV cache and "
                             "generate API: the form that deploys), 'logits' = torch.onnx export of a logits-only "
                             "wrapper (no cache; for evaluation). Unsupported architectures fall back to 'logits'")
    lm_precision: Literal["fp32", "fp16"] = Field(
        "fp32", description="Causal language models, 'genai' method: precision the model builder writes")
    lm_parity_windows: int = Field(4, ge=1, le=64,
                                   description="Causal language models: token windows whose logits are compared "
                                               "with torch (from the evaluation text, else random token ids)")
    lm_new_tokens: int = Field(16, ge=1, le=256,
                               description="Causal language models: greedy tokens per prompt compared with torch")
    lm_context_length: int = Field(
        0, ge=0, le=1 << 24,
        description="Causal language models, 'genai' method: the most tokens (prompt + generation) the export "
                    "serves. 0: the model's own (max_position_embeddings). A smaller N gives smaller rotary "
                    "cos/sin tables (fp32, never quantized: 67 MB for Gemma 3's 32768 positions) and KV-cache "
                    "allocation; onnxruntime-genai refuses prompts plus generation longer than N")

    @field_validator("lm_context_length")
    @classmethod
    def _check_context(cls, v: int) -> int:
        if 0 < v < MIN_CONTEXT:
            raise ValueError(f"lm_context_length {v}: use 0 (the model's own length) or at least {MIN_CONTEXT} "
                             "positions")
        return v


class ConvertToOnnx(Plugin):
    id: ClassVar[str] = "builtin.convert_onnx"
    version: ClassVar[str] = "1"
    title: ClassVar[str] = "Convert to ONNX"
    category: ClassVar[Category] = "convert"
    description: ClassVar[str] = (
        "Exports a torch model to ONNX with torch.onnx and verifies it: the ONNX file is run with "
        "onnxruntime on the evaluation data (or labelled random inputs) and compared with torch. Causal "
        "language models go through the onnxruntime-genai model builder (KV cache, generate API) or a "
        "logits-only export, checked on token windows (logits) and greedy tokens.")
    input_formats: ClassVar[tuple[Family, ...]] = ("torch",)
    output_format: ClassVar[Family] = "onnx"
    Params: ClassVar[type[PluginParams]] = ConvertParams

    def check(self, model: ModelHandle, params: PluginParams) -> list[Problem]:
        problems = self.check_format(model)
        if not problems and _lm_config(model) is not None:
            from slimline.core.lm.genai import genai_available

            if getattr(params, "lm_method", "genai") == "genai" and not genai_available():
                problems.append(Problem("the onnxruntime-genai model builder is not installed",
                                        fix="pip install 'slimline[llm]', or set lm_method to 'logits'"))
            problems += _context_problems(model, params)
            return problems
        if not problems and not model.inputs:
            problems.append(Problem("the model's input shapes are unknown",
                                    fix="give the input shape when opening the model"))
        return problems

    def run(self, model: ModelHandle, params: ConvertParams, ctx: StepContext) -> StepOutput:  # type: ignore[override]
        import torch

        cfg = _lm_config(model)
        if cfg is not None:
            from slimline.plugins.convert.lm import convert_lm

            return convert_lm(model, params, ctx, cfg)

        from slimline.core.export.parity import ort_runner
        from slimline.core.fidelity import max_abs_error, row_cosines
        from slimline.core.models import load_torch_runnable, open_model
        from slimline.core.onnx_export import OnnxExportFailed, export_torch_to_onnx
        from slimline.core.runtime import _to_numpy_list

        ctx.progress(0.0, "loading torch model")
        module = load_torch_runnable(model)
        ctx.cancel.raise_if_cancelled()
        feeds, input_kind = _example_feeds(model, ctx, params.parity_samples)
        example = {k: torch.from_numpy(v) for k, v in feeds.items()}
        exporter = "legacy" if model.format == "torchscript" else params.exporter
        out_path = ctx.output_path("model.onnx")
        ctx.progress(0.1, f"exporting with the {exporter} exporter (opset {params.opset})")
        try:
            exported = export_torch_to_onnx(
                module, {k: v[:2] for k, v in example.items()}, out_path, input_names=[s.name for s in model.inputs],
                output_names=[s.name for s in model.outputs], opset=params.opset, exporter=exporter,
                dynamic_batch=params.dynamic_batch, external_data=None)
        except OnnxExportFailed as exc:
            raise StepFailed(exc.message, hint=exc.hint, subject="Convert to ONNX") from exc
        ctx.cancel.raise_if_cancelled()
        ctx.progress(0.7, "verifying ONNX against torch")
        with torch.inference_mode():
            ref = module(**example) if len(example) > 1 else module(next(iter(example.values())))
        ref_arr = _to_numpy_list(ref, [])[0]
        got = ort_runner(out_path, model.inputs)(feeds)[0]
        if got.shape != ref_arr.shape:
            max_abs, cos = float("inf"), 0.0
        else:
            max_abs, cos = max_abs_error(ref_arr, got), float(row_cosines(ref_arr, got).min())
        if not np.isfinite(max_abs) or max_abs > params.parity_atol:
            out_path.unlink(missing_ok=True)
            out_path.with_suffix(".data").unlink(missing_ok=True)
            what = (f"differs from torch by {max_abs:.3g} (tolerance {params.parity_atol})"
                    if got.shape == ref_arr.shape else f"has shape {list(got.shape)}, torch's {list(ref_arr.shape)}")
            raise StepFailed(f"ONNX output {what}",
                             hint="try the other exporter or a newer opset; report the model if it persists",
                             subject="Convert to ONNX")
        handle = open_model(out_path)
        got_opset = exported.opset
        notes = [
            f"exported with the {exporter} exporter; requested opset {params.opset}, file declares opset {got_opset}",
            f"parity vs torch on {len(got)} {input_kind} rows: max abs error {max_abs:.2e}, min cosine {cos:.6f}",
        ]
        warnings = []
        if got_opset != params.opset:
            warnings.append(f"requested opset {params.opset} but the exporter wrote opset {got_opset}")
        return StepOutput(model=handle, notes=notes, warnings=warnings,
                          metrics={"parity_max_abs": max_abs, "parity_min_cosine": cos, "opset": float(got_opset)})


def _lm_config(model: ModelHandle) -> dict[str, Any] | None:
    """The HF config when the model is a causal LM (task token_logits), else None."""
    from slimline.core.lm.convert import causal_lm_config

    try:
        return causal_lm_config(model)
    except SlimlineError:
        return None


def _context_problems(model: ModelHandle, params: PluginParams) -> list[Problem]:
    """lm_context_length against the model's own limit (and a note that the logits export ignores it)."""
    n = int(getattr(params, "lm_context_length", 0) or 0)
    cfg = _lm_config(model) if n else None
    if cfg is None:
        return []
    if getattr(params, "lm_method", "genai") != "genai":
        return [Problem("lm_context_length applies to the 'genai' method only; the logits export has no rotary "
                        "tables or cache to size", severity="warning", field="lm_context_length",
                        fix="set lm_context_length to 0, or lm_method to 'genai'")]
    why = context_length_problem(cfg, n)
    if why is None:
        return []
    own = model_context_length(cfg)
    return [Problem(why, field="lm_context_length",
                    fix=f"set lm_context_length between {MIN_CONTEXT} and {own}, or 0" if own else
                    "set lm_context_length to 0")]


def _example_feeds(model: ModelHandle, ctx: StepContext, n: int) -> tuple[dict[str, Any], str]:
    """Rows for the export example and the parity check: evaluation data, else labelled random inputs."""
    from slimline.core.data import np_dtype, random_dataset

    data = getattr(ctx.data, "eval", None) if ctx.data is not None else None
    if data is not None and len(data):
        rows = data.take(n) if hasattr(data, "take") else data
        if all(s.name in rows.inputs for s in model.inputs):
            return {s.name: np.ascontiguousarray(np.asarray(rows.inputs[s.name]).astype(np_dtype(s.dtype), copy=False))
                    for s in model.inputs}, "evaluation-data"
    rnd = random_dataset(model, n, seed=ctx.seed)
    return {s.name: np.ascontiguousarray(rnd.inputs[s.name].astype(np_dtype(s.dtype), copy=False))
            for s in model.inputs}, "random (smoke check only)"
