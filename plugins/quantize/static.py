"""Static INT8 (QDQ by default): weights and activations quantized with ranges from calibration data.

The right choice for conv nets on CPU: onnxruntime fuses QDQ pairs into QLinearConv
kernels, and no activation statistics are computed at run time.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from slimline.core.errors import StepFailed
from slimline.core.handle import ModelHandle
from slimline.core.plugin import Problem, StepContext
from slimline.plugins.quantize import evaluate
from slimline.plugins.quantize.base import Attempt, QuantizeBase
from slimline.plugins.quantize.params import GuardrailParams, QType, StaticOp

_ALL_STATIC_OPS: tuple[str, ...] = StaticOp.__args__  # type: ignore[attr-defined]


class StaticParams(GuardrailParams):
    quant_format: Literal["QDQ", "QOperator"] = Field("QDQ", description=(
        "QDQ inserts QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into int8 kernels (portable, "
        "recommended); QOperator writes QLinear* ops directly."))
    calibrate_method: Literal["MinMax", "Entropy", "Percentile"] = Field("MinMax", description=(
        "How activation ranges are chosen from calibration data: MinMax (full observed range), Entropy (KL-optimal "
        "clipping), Percentile (clip the extreme tail)."))
    percentile: float = Field(99.999, ge=90.0, le=100.0,
        description="Percentile kept when calibrate_method is Percentile.")
    per_channel: bool = Field(True, description="One weight scale per output channel (more accurate).")
    reduce_range: bool = Field(False, description="7-bit weights (for CPUs without VNNI; less accurate).")
    activation_type: QType = Field("QInt8", description="Integer type for activations (S8S8 is the default pairing).")
    weight_type: QType = Field("QInt8", description="Integer type for weights.")
    calibration_samples: int = Field(128, ge=1, le=100_000,
        description="Rows of calibration data used to choose activation ranges.")
    calibration_batch: int = Field(16, ge=1, le=1024,
        description="Rows per calibration batch (memory only; ignored for fixed-batch models).")
    op_types_to_quantize: tuple[StaticOp, ...] = Field((),
        description="Op types to quantize; empty = every type onnxruntime supports.")


class CalibrationReader:
    """onnxruntime CalibrationDataReader over a Slimline dataset (honours cancel between batches)."""

    def __init__(self, feeds: dict[str, np.ndarray], batch: int, cancel: Any = None,
                 progress: Any = None, axes: dict[str, int | None] | None = None) -> None:
        self.feeds = feeds
        self.axes = axes or {}
        self.batch = batch
        self.cancel = cancel
        self.progress = progress
        self.n = evaluate.n_rows(feeds, self.axes)
        self._it: Iterator[dict[str, np.ndarray]] = self._gen()

    def _gen(self) -> Iterator[dict[str, np.ndarray]]:
        stop = self.n - (self.n % self.batch) if self.n >= self.batch else self.n
        for i in range(0, max(stop, 1), self.batch):
            if self.cancel is not None:
                self.cancel.raise_if_cancelled()
            if self.progress is not None:
                self.progress(i / max(self.n, 1))
            yield evaluate.take_rows(self.feeds, self.axes, slice(i, i + self.batch))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._gen()

    def __len__(self) -> int:
        return self.n


def _calibration_dataset(ctx: StepContext) -> tuple[str, Any] | None:
    data = ctx.data
    if data is None:
        return None
    for role in ("calibration", "train", "eval"):
        ds = getattr(data, role, None)
        if ds is not None:
            return role, ds
    return None


class QuantizeStatic(QuantizeBase):
    id: ClassVar[str] = "builtin.quantize_static"
    version: ClassVar[str] = "1"
    title: ClassVar[str] = "Quantize: static INT8"
    description: ClassVar[str] = (
        "Quantizes weights and activations to 8-bit integers using ranges measured on calibration data (QDQ "
        "format by default, S8S8, per-channel). The fast INT8 mode for conv nets on CPU. Needs a calibration "
        "dataset; the result is checked against the input model and retried with safer settings if it drifts.")
    Params: ClassVar = StaticParams
    needs_data: ClassVar[tuple[str, ...]] = ("calibration",)
    core_ops: ClassVar[tuple[str, ...]] = ("Conv", "MatMul", "Gemm", "ConvTranspose")

    def check(self, model: ModelHandle, params: StaticParams) -> list[Problem]:  # type: ignore[override]
        problems = self._op_problems(model, tuple(params.op_types_to_quantize), "quantize")
        if any(p.severity == "error" for p in problems):
            return problems
        try:
            from slimline.plugins.quantize.prep import count_ops, subgraph_only_ops

            graph = self._load_graph(model)
            wanted = tuple(params.op_types_to_quantize) or self.core_ops
            hidden = subgraph_only_ops(graph, wanted)
            top = count_ops(graph, subgraphs=False)
        except Exception:  # noqa: BLE001 - _op_problems already reported an unreadable graph
            hidden, top = {}, {}
        if not hidden:
            problems += self._weight_share_problems(graph, tuple(params.op_types_to_quantize) or _ALL_STATIC_OPS)
        if hidden and not any(top.get(op) for op in wanted):
            problems.append(Problem(
                "static INT8 cannot quantize this model: its layers (" + ", ".join(
                    f"{n} {op}" for op, n in sorted(hidden.items())) + ") are all inside If/Loop/Scan "
                "subgraphs, and onnxruntime's static quantizer does not quantize subgraphs",
                field="op_types_to_quantize",
                fix="use Quantize: dynamic INT8 (builtin.quantize_dynamic), which quantizes subgraph weights, "
                    "or Convert: FP16"))
        if params.quant_format == "QOperator" and params.activation_type == "QInt8":
            problems.append(Problem(
                "QOperator with signed (S8) activations is slow on x86 CPUs", severity="warning",
                field="activation_type", fix="use quant_format QDQ, or activation_type QUInt8"))
        return problems

    @staticmethod
    def _weight_share_problems(graph: Any, wanted: tuple[str, ...]) -> list[Problem]:
        """An error when under 1 % of the float32 weights sit in ops the static quantizer handles (LSTM nets)."""
        from slimline.plugins.quantize.prep import float_weights_by_op

        try:
            by_op = float_weights_by_op(graph)
        except Exception:  # noqa: BLE001 - a best-effort early refusal; the run still checks the result
            return []
        total = sum(by_op.values())
        covered = sum(n for op, n in by_op.items() if op in wanted)
        if not total or covered >= 0.01 * total:
            return []
        top = sorted(((n, op) for op, n in by_op.items() if op not in wanted), reverse=True)[:3]
        holders = ", ".join(f"{op} ({n:,} values)" for n, op in top)
        rnn = any(op in ("LSTM", "GRU", "RNN") for _, op in top)
        return [Problem(
            f"static INT8 would quantize almost nothing: {total - covered:,} of {total:,} float32 weight values "
            f"are in {holders}, which onnxruntime's static quantizer does not quantize",
            field="op_types_to_quantize",
            fix=("use Quantize: dynamic INT8 (builtin.quantize_dynamic), which quantizes LSTM/GRU weights, "
                 "or Convert: FP16") if rnn else "use Quantize: dynamic INT8 or Convert: FP16")]

    def _prepare_data(self, params: StaticParams, ctx: StepContext) -> None:
        if _calibration_dataset(ctx) is None:
            raise StepFailed(
                "static quantization needs a calibration dataset, and this run has none",
                subject=f"{self.id}: calibration data",
                hint="add --data (a few hundred representative inputs), or choose dynamic quantization "
                     "(builtin.quantize_dynamic), which needs no data")

    def _first_attempt(self, params: StaticParams, model_ops: dict[str, int]) -> Attempt:
        wanted = params.op_types_to_quantize or _ALL_STATIC_OPS
        ops = tuple(op for op in wanted if model_ops.get(op))
        return Attempt(per_channel=params.per_channel, reduce_range=params.reduce_range, op_types=ops, exclude=())

    def _quantize(self, src: Path, dst: Path, attempt: Attempt, params: StaticParams, ctx: StepContext) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        role, ds = _calibration_dataset(ctx)  # type: ignore[misc]
        sess = evaluate.make_session(src, ctx.threads)
        feeds, _ = evaluate.dataset_feeds(ds, sess, params.calibration_samples, role)
        axes = evaluate.feed_axes(sess)
        rows = evaluate.n_rows(feeds, axes)
        batch = evaluate.fixed_batch(sess) or min(params.calibration_batch, max(rows, 1))
        del sess
        if not rows:
            raise StepFailed(f"the {role} dataset is empty", subject=f"{self.id}: calibration data",
                             hint="give a dataset with at least one row")
        reader = CalibrationReader(feeds, batch, ctx.cancel, axes=axes)
        extra: dict[str, Any] = {}
        if params.calibrate_method == "Percentile":
            extra["CalibPercentile"] = params.percentile
        quantize_static(
            str(src), str(dst), reader,
            quant_format=getattr(QuantFormat, params.quant_format),
            op_types_to_quantize=list(attempt.op_types) or None,
            per_channel=attempt.per_channel, reduce_range=attempt.reduce_range,
            activation_type=getattr(QuantType, params.activation_type),
            weight_type=getattr(QuantType, params.weight_type),
            nodes_to_exclude=list(attempt.exclude),
            calibrate_method=getattr(CalibrationMethod, params.calibrate_method),
            extra_options=extra,
        )
        if role == "eval":
            self._calib_warning = ("calibrated on the evaluation split (no calibration/training data given): "
                                   "the fidelity and accuracy figures are optimistic — add --train-data")
        self._calib_note = f"calibrated on {min(len(reader), params.calibration_samples)} rows of the {role} split " \
                           f"({getattr(ds, 'name', role)}), {params.calibrate_method}"

    def _explain(self, params: Any, attempt: Attempt, q_ops: dict[str, int], size_ratio: float,
                 latency_ratio: float, flags: dict[str, bool]) -> list[str]:
        out = []
        vnni = flags.get("avx512_vnni") or flags.get("avx_vnni") or flags.get("amx_int8")
        if not vnni:
            out.append("This CPU has no VNNI/AMX int8 dot-product instructions (see /proc/cpuinfo), so int8 "
                       "kernels gain little over fp32.")
        n_q = q_ops.get("QuantizeLinear", 0)
        if params.quant_format == "QOperator" and params.activation_type == "QInt8":
            out.append("QOperator with S8 activations runs slow kernels on x86: use QDQ or QUInt8 activations.")
        if n_q:
            out.append(f"The graph has {n_q} QuantizeLinear node(s): each float↔int8 boundary (ops left in float, "
                       "excluded nodes) costs a conversion; on small models this overhead can exceed the int8 gain.")
        if attempt.exclude:
            out.append(f"{len(attempt.exclude)} node(s) were left in float for accuracy, adding boundaries.")
        if size_ratio > 0.5:
            out.append("Size: QDQ keeps fp32 weights for ops that were not quantized (excluded nodes, op types "
                       "outside op_types_to_quantize) — the saving comes only from quantized Conv/MatMul/Gemm weights.")
        return out

    def run(self, model: ModelHandle, params: Any, ctx: StepContext):
        self._calib_note = ""
        self._calib_warning = ""
        out = super().run(model, params, ctx)
        if self._calib_note:
            out.notes.insert(0, self._calib_note)
        if self._calib_warning:
            out.warnings.append(self._calib_warning)
        return out
