"""Convert a torch model to ONNX and prove the export is faithful.

An export that silently changes outputs is the worst kind of failure, so the
step runs the torch model and the ONNX file on the same inputs and fails when
they disagree beyond the tolerance.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from slimline.core.errors import StepFailed
from slimline.core.handle import ModelHandle
from slimline.core.plugin import Plugin, PluginParams, Problem, StepContext, StepOutput


class ConvertParams(PluginParams):
    opset: int = Field(18, ge=7, le=23, description="ONNX opset to target (checked after export)")
    exporter: Literal["dynamo", "legacy"] = Field(
        "dynamo", description="torch.export-based exporter (recommended) or the legacy TorchScript tracer "
                              "(faster, deprecated; used automatically for TorchScript inputs)")
    dynamic_batch: bool = Field(True, description="Make the first input dimension dynamic")
    parity_atol: float = Field(1e-3, gt=0, le=10, description="Max abs difference allowed between torch and ONNX outputs")
    parity_samples: int = Field(16, ge=1, le=4096, description="Rows used for the parity check")


class ConvertToOnnx(Plugin):
    id: ClassVar[str] = "builtin.convert_onnx"
    version: ClassVar[str] = "1"
    title: ClassVar[str] = "Convert to ONNX"
    category: ClassVar[str] = "convert"
    description: ClassVar[str] = (
        "Exports a torch model to ONNX with torch.onnx and verifies it: the ONNX file is run with "
        "onnxruntime on the evaluation data (or labelled random inputs) and compared with torch.")
    input_formats: ClassVar[tuple[str, ...]] = ("torch",)
    output_format: ClassVar[str] = "onnx"
    Params: ClassVar[type[PluginParams]] = ConvertParams

    def check(self, model: ModelHandle, params: PluginParams) -> list[Problem]:
        problems = self.check_format(model)
        if not problems and not model.inputs:
            problems.append(Problem("the model's input shapes are unknown",
                                    fix="give the input shape when opening the model"))
        return problems

    def run(self, model: ModelHandle, params: ConvertParams, ctx: StepContext) -> StepOutput:  # type: ignore[override]
        import numpy as np
        import torch

        from slimline.core.models import load_torch_runnable, open_model

        ctx.progress(0.0, "loading torch model")
        module = load_torch_runnable(model)
        ctx.cancel.raise_if_cancelled()
        feeds, input_kind = _example_feeds(model, ctx, params.parity_samples)
        example = {k: torch.from_numpy(v) for k, v in feeds.items()}
        export_batch = {k: v[: max(2, 1)] for k, v in example.items()}
        if next(iter(export_batch.values())).shape[0] < 2:  # dynamic batch needs an example of ≥2
            export_batch = {k: torch.cat([v, v]) for k, v in export_batch.items()}
        exporter = "legacy" if model.format == "torchscript" else params.exporter
        out_path = ctx.output_path("model.onnx")
        tmp_path = out_path.with_name(".model.onnx.tmp")
        ctx.progress(0.1, f"exporting with the {exporter} exporter (opset {params.opset})")
        _export(module, export_batch, model, tmp_path, params, exporter)
        ctx.cancel.raise_if_cancelled()
        tmp_path.replace(out_path)
        import onnx

        got_opset = max((o.version for o in onnx.load(str(out_path), load_external_data=False).opset_import
                         if o.domain in ("", "ai.onnx")), default=0)
        ctx.progress(0.7, "verifying ONNX against torch")
        with torch.inference_mode():
            ref = module(**example) if len(example) > 1 else module(next(iter(example.values())))
        ref_arr = _first_tensor(ref).detach().cpu().numpy()
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
        onnx_feeds = {i.name: feeds[i.name] for i in sess.get_inputs() if i.name in feeds}
        if len(onnx_feeds) != len(sess.get_inputs()):  # exporter renamed inputs: feed by position
            onnx_feeds = {i.name: v for i, v in zip(sess.get_inputs(), feeds.values())}
        got = sess.run(None, onnx_feeds)[0]
        max_abs = float(np.max(np.abs(got.astype(np.float64) - ref_arr.astype(np.float64)))) if got.size else 0.0
        a, b = got.reshape(len(got), -1).astype(np.float64), ref_arr.reshape(len(ref_arr), -1).astype(np.float64)
        cos = float(np.min(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)))
        if not np.isfinite(max_abs) or max_abs > params.parity_atol:
            out_path.unlink(missing_ok=True)
            raise StepFailed(f"ONNX output differs from torch by {max_abs:.3g} (tolerance {params.parity_atol})",
                             hint="try the other exporter or a newer opset; report the model if it persists",
                             subject="Convert to ONNX")
        handle = open_model(out_path)
        notes = [
            f"exported with the {exporter} exporter; requested opset {params.opset}, file declares opset {got_opset}",
            f"parity vs torch on {len(got)} {input_kind} rows: max abs error {max_abs:.2e}, min cosine {cos:.6f}",
        ]
        warnings = []
        if got_opset != params.opset:
            warnings.append(f"requested opset {params.opset} but the exporter wrote opset {got_opset}")
        return StepOutput(model=handle, notes=notes, warnings=warnings,
                          metrics={"parity_max_abs": max_abs, "parity_min_cosine": cos, "opset": float(got_opset)})


def _first_tensor(out: Any) -> Any:
    """The first tensor of a model output (tensor, tuple, dict or HF ModelOutput)."""
    if hasattr(out, "detach"):
        return out
    if isinstance(out, dict) or hasattr(out, "values"):
        return next(iter(out.values()))
    return out[0]


def _example_feeds(model: ModelHandle, ctx: StepContext, n: int) -> tuple[dict[str, Any], str]:
    data = getattr(ctx.data, "eval", None) if ctx.data is not None else None
    if data is not None and len(data):
        rows = data.take(n) if hasattr(data, "take") else data
        feeds = {s.name: rows.inputs[s.name] for s in model.inputs if s.name in rows.inputs}
        if len(feeds) == len(model.inputs):
            return {k: _as_dtype(v, s.dtype) for (k, v), s in zip(feeds.items(), model.inputs)}, "evaluation-data"
    from slimline.core.data import random_dataset

    rnd = random_dataset(model, n, seed=ctx.seed)
    return {s.name: _as_dtype(rnd.inputs[s.name], s.dtype) for s in model.inputs}, "random (smoke check only)"


def _as_dtype(arr: Any, dtype: str) -> Any:
    import numpy as np

    return np.ascontiguousarray(arr.astype(dtype if dtype != "float" else "float32", copy=False))


def _export(module: Any, example: dict[str, Any], model: ModelHandle, path: Path,
            params: ConvertParams, exporter: str) -> None:
    import logging

    import torch

    # The exporter logs optional-dependency notices (e.g. torchvision ops) at WARNING.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    names = [s.name for s in model.inputs]
    out_names = [s.name for s in model.outputs] or None
    args = tuple(example[n] for n in names)
    try:
        if exporter == "legacy":
            axes = {n: {0: "batch"} for n in names + (out_names or [])} if params.dynamic_batch else None
            torch.onnx.export(module, args, str(path), input_names=names, output_names=out_names,
                              opset_version=params.opset, dynamic_axes=axes, dynamo=False)
        else:
            dyn = None
            if params.dynamic_batch:
                batch = torch.export.Dim("batch")
                dyn = tuple({0: batch} for _ in names)  # positional: matches args
            torch.onnx.export(module, args, str(path), input_names=names, output_names=out_names,
                              opset_version=params.opset, dynamic_shapes=dyn, dynamo=True,
                              external_data=False, verbose=False)
    except Exception as exc:  # exporter errors are long; keep the first line, details in the log
        path.unlink(missing_ok=True)
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        other = "legacy" if exporter == "dynamo" else "dynamo"
        raise StepFailed(f"torch.onnx export failed: {first}",
                         hint=f"try exporter='{other}' or another opset; unsupported ops must be replaced",
                         subject="Convert to ONNX") from exc

