"""Shared parameters: the guardrail budget and verification settings every quantize step has."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from slimline.core.plugin import PluginParams

QType = Literal["QInt8", "QUInt8"]
# Ops onnxruntime can quantize in QDQ / QOperator form (registry of ORT 1.2x).
StaticOp = Literal[
    "Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "Relu", "Clip", "LeakyRelu", "Sigmoid", "Softmax",
    "MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
    "Flatten", "Resize", "Slice", "Pad", "Split", "Gather", "GatherElements", "Where", "ArgMax", "TopK",
    "InstanceNormalization", "LayerNormalization", "BatchNormalization", "EmbedLayerNormalization", "CumSum",
]
DynamicOp = Literal["MatMul", "Gemm", "Conv", "Attention", "LSTM", "Gather", "EmbedLayerNormalization", "Transpose"]


class GuardrailParams(PluginParams):
    """Budget a result must meet before it is passed on, and how hard to try."""

    min_cosine: float = Field(0.99, ge=0.0, le=1.0, description=(
        "Smallest acceptable mean cosine between the quantized and the input model's outputs on the evaluation "
        "data (for an embedding model: of the pooled vector). Below it the step retries safer settings, then "
        "fails. Dense maps and language models are judged by the pipeline's per-task budgets instead."))
    min_top1_agreement: float = Field(0.98, ge=0.0, le=1.0, description=(
        "Smallest acceptable share of rows whose top-1 class is unchanged (class-score outputs only)."))
    max_attempts: int = Field(5, ge=1, le=10, description=(
        "Attempts in all: the requested settings first, then safer ones (per-channel, fewer op types, "
        "excluding the worst layers)."))
    eval_samples: int = Field(512, ge=1, le=100_000, description=(
        "Rows of evaluation data used to compare outputs (eval split, else calibration, else random)."))
    latency_runs: int = Field(20, ge=20, le=1000, description=(
        "Timed runs (after 5 warm-up runs) for the latency comparison at batch 1."))
    nodes_to_exclude: tuple[str, ...] = Field((), description="Node names to leave in float (as in the input model).")
    op_types_to_exclude: tuple[str, ...] = Field((), description=(
        "Op types whose nodes stay in float, e.g. ['Softmax']."))
