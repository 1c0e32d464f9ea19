"""Dynamic INT8: weights quantized offline, activations scaled per batch at run time.

Best for Linear-heavy models (transformers, MLPs, LSTMs): no calibration data, and
MatMulInteger has fast kernels. Conv is opt-in because ConvInteger has none on
most CPUs — the step measures and says so when it is slower.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from slimline.core.handle import ModelHandle
from slimline.core.plugin import Problem, StepContext
from slimline.plugins.quantize.base import Attempt, QuantizeBase
from slimline.plugins.quantize.params import DynamicOp, GuardrailParams, QType


class DynamicParams(GuardrailParams):
    weight_type: QType = Field("QInt8", description=(
        "Integer type for weights: signed (QInt8, symmetric) or unsigned (QUInt8)."))
    per_channel: bool = Field(True, description=(
        "One scale per output channel instead of one per tensor (more accurate)."))
    reduce_range: bool = Field(False, description=(
        "Quantize weights to 7 bits (avoids overflow on old CPUs without VNNI; less accurate)."))
    op_types: tuple[DynamicOp, ...] = Field(
        ("MatMul", "Gemm", "Attention", "LSTM", "Gather", "EmbedLayerNormalization"),
        description="Op types to quantize. Conv is off by default: ConvInteger is slow on most CPUs "
                    "(use static quantization for conv nets). Gather quantizes embedding tables.")
    gemm_to_matmul: bool = Field(True, description=(
        "Rewrite Gemm nodes with constant weights as MatMul+Add so Linear layers exported as Gemm get "
        "quantized (onnxruntime has no dynamic INT8 Gemm)."))


class QuantizeDynamic(QuantizeBase):
    id: ClassVar[str] = "builtin.quantize_dynamic"
    version: ClassVar[str] = "1"
    title: ClassVar[str] = "Quantize: dynamic INT8"
    description: ClassVar[str] = (
        "Stores weights as 8-bit integers (about 4× smaller) and quantizes activations on the fly, with no "
        "calibration data. Fast for MatMul-heavy models (transformers, MLPs, LSTMs); for conv nets prefer "
        "static INT8. The result is checked against the input model and retried with safer settings if "
        "its outputs drift beyond the budget.")
    Params: ClassVar = DynamicParams
    needs_data: ClassVar[tuple[str, ...]] = ()
    core_ops: ClassVar[tuple[str, ...]] = ("MatMul", "Gemm", "Attention", "LSTM")

    def check(self, model: ModelHandle, params: DynamicParams) -> list[Problem]:  # type: ignore[override]
        problems = self._op_problems(model, tuple(params.op_types), "quantize")
        if problems or model.family != "onnx":
            return problems
        ops = _ops_or_empty(self, model)
        if "Conv" in params.op_types and ops.get("Conv"):
            problems.append(Problem(
                "dynamic INT8 Conv runs as ConvInteger, which is usually slower than fp32 on CPU",
                severity="warning", field="op_types", fix="use Quantize: static INT8 (QDQ) for conv nets"))
        elif ops.get("Conv", 0) and not any(ops.get(o, 0) for o in ("MatMul", "Gemm")):
            problems.append(Problem("this is a conv net: dynamic INT8 leaves Conv layers in float",
                                    severity="warning", field="op_types",
                                    fix="use Quantize: static INT8 (QDQ) with calibration data"))
        return problems

    def _gemm_rewrite(self, params: DynamicParams) -> bool:
        return params.gemm_to_matmul and "Gemm" in params.op_types

    def _first_attempt(self, params: DynamicParams, model_ops: dict[str, int]) -> Attempt:
        ops = tuple(op for op in params.op_types if op != "Gemm")
        if params.gemm_to_matmul and "Gemm" in params.op_types and "MatMul" not in ops:
            ops = ("MatMul", *ops)
        present = tuple(op for op in ops if model_ops.get(op))
        ops = present or ops  # only what the graph has, so "fewer op types" retries mean something
        return Attempt(per_channel=params.per_channel, reduce_range=params.reduce_range, op_types=ops, exclude=())

    def _quantize(self, src: Path, dst: Path, attempt: Attempt, params: DynamicParams, ctx: StepContext) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            str(src), str(dst), op_types_to_quantize=list(attempt.op_types), per_channel=attempt.per_channel,
            reduce_range=attempt.reduce_range, weight_type=getattr(QuantType, params.weight_type),
            nodes_to_exclude=list(attempt.exclude),
            extra_options={"MatMulConstBOnly": True, "EnableSubgraph": True},
        )

    def _explain(self, params: Any, attempt: Attempt, q_ops: dict[str, int], size_ratio: float,
                 latency_ratio: float, flags: dict[str, bool]) -> list[str]:
        out = []
        if q_ops.get("ConvInteger"):
            out.append("Dynamic quantization of Conv uses ConvInteger, which has no fast kernel in onnxruntime's CPU "
                       "provider (and re-quantizes activations at every layer) — use static QDQ "
                       "(builtin.quantize_static) for conv nets, or drop Conv from op_types.")
        vnni = flags.get("avx512_vnni") or flags.get("avx_vnni") or flags.get("amx_int8")
        if not vnni:
            out.append("This CPU has no VNNI/AMX int8 dot-product instructions, so integer matmuls gain little "
                       "over fp32; the size saving remains.")
        n_dq = q_ops.get("DynamicQuantizeLinear", 0)
        n_mm = q_ops.get("MatMulInteger", 0) + q_ops.get("DynamicQuantizeMatMul", 0)
        if n_dq and n_mm and not q_ops.get("ConvInteger"):
            out.append(f"{n_mm} integer matmul(s) each preceded by a run-time activation quantization "
                       f"({n_dq} DynamicQuantizeLinear): on small layers that overhead can outweigh the int8 "
                       "speed-up — static quantization avoids it.")
        if size_ratio > 0.5:
            out.append("Size: little was quantized (few MatMul/Gather weights, or most weights in other ops) — "
                       "check op_types; for conv nets use static INT8.")
        return out


def _ops_or_empty(plugin: QuantizeBase, model: ModelHandle) -> dict[str, int]:
    from slimline.plugins.quantize.prep import count_ops

    try:
        return count_ops(plugin._load_graph(model))
    except Exception:  # noqa: BLE001
        return {}
