"""Measure one model the same way for every step: size, latency, accuracy, fidelity.

Fidelity is always against the pipeline's original model, so a chain of small
losses cannot hide. Flags compare a step's output with its input: a step that
made the model bigger or slower, or broke the accuracy budget, is never shown
as a win.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slimline.core.handle import ModelHandle
from slimline.core.metrics import AccuracyReport, LatencyReport
from slimline.core.pipeline import Evaluation
from slimline.core.results import Fidelity, Measurement

SLOWER_TOLERANCE = 1.05  # p50 within 5 % is measurement noise on this class of machine


@dataclass
class Evaluator:
    settings: Evaluation
    eval_data: Any = None           # Dataset | None
    reference_outputs: np.ndarray | None = None
    reference_accuracy: float | None = None
    threads: int = 0
    device: str = "cpu"
    _random: Any = field(default=None, repr=False)

    def data_for(self, handle: ModelHandle) -> tuple[Any, str]:
        """The evaluation dataset, or labelled random inputs when there is none."""
        if self.eval_data is not None:
            return self.eval_data, "dataset"
        if self._random is None:
            from slimline.core.data import random_dataset

            self._random = random_dataset(handle, 32, seed=0)
        return self._random, "random"

    def evaluate(self, handle: ModelHandle, cancel: Any = None) -> Measurement:
        from slimline.core.metrics import fidelity, measure_latency, measure_size
        from slimline.core.runtime import open_session, predict

        size = measure_size(handle)
        if not handle.capabilities.run:
            return Measurement(size=size, note=handle.capabilities.reason)
        data, kind = self.data_for(handle)
        session = open_session(handle, device=self.device, threads=self.threads)
        outputs = predict(session, data, batch_size=64)[0]
        if cancel is not None:
            cancel.raise_if_cancelled()
        if self.reference_outputs is None:
            self.reference_outputs = outputs
        fid = Fidelity(**fidelity(self.reference_outputs, outputs).model_dump(), input_kind=kind,
                       dataset=getattr(data, "name", "random inputs"))
        acc = None
        if kind == "dataset" and getattr(data, "labels", None) is not None:
            acc = _top1(outputs, data)
            if self.reference_accuracy is None:
                self.reference_accuracy = acc.top1
        lat: dict[str, LatencyReport] = {}
        ls = self.settings.latency
        for batch in ls.batch_sizes:
            if cancel is not None:
                cancel.raise_if_cancelled()
            lat[str(batch)] = measure_latency(handle, batch=batch, runs=ls.runs, warmup=ls.warmup,
                                              threads=ls.threads or self.threads, device=self.device,
                                              dataset=self.eval_data)
        return Measurement(size=size, fidelity=fid, accuracy=acc, latency=lat)


def _top1(outputs: np.ndarray, data: Any) -> AccuracyReport:
    """Top-1 from already computed outputs (no second pass over the data)."""
    labels = np.asarray(data.labels)
    pred = outputs.reshape(len(outputs), -1).argmax(-1)
    return AccuracyReport(dataset=getattr(data, "name", "dataset"), n=int(len(labels)),
                          top1=float((pred[: len(labels)] == labels).mean()))


def flags_for(step_eval: Measurement, input_eval: Measurement, original_eval: Measurement,
              settings: Evaluation) -> tuple[list[str], list[str]]:
    """(flags, reasons): bigger / slower than the step's input, over the accuracy budget.

    Takes Measurements or StepResults (a StepResult is a Measurement).
    """
    flags: list[str] = []
    reasons: list[str] = []
    a, b = input_eval.size.bytes_on_disk, step_eval.size.bytes_on_disk
    if b > a * 1.001:
        flags.append("bigger")
        reasons.append(f"bigger on disk: {_mb(a)} → {_mb(b)}")
    la, lb = input_eval.latency or {}, step_eval.latency or {}
    for batch, rep in lb.items():
        before = la.get(batch)
        # Slower only when beyond noise: >5 % at p50 AND above the input's own p90.
        if before and rep.p50_ms > before.p50_ms * SLOWER_TOLERANCE and rep.p50_ms > before.p90_ms:
            if "slower" not in flags:
                flags.append("slower")
            reasons.append(f"slower at batch {batch}: p50 {before.p50_ms:.3f} → {rep.p50_ms:.3f} ms "
                           f"({rep.p50_ms / before.p50_ms:.2f}×)")
    budgets = settings.budgets
    acc, acc0 = step_eval.accuracy, original_eval.accuracy
    if acc and acc0:
        drop = acc0.top1 - acc.top1
        if drop > budgets.max_accuracy_drop:
            flags.append("over_budget")
            reasons.append(f"top-1 {acc.top1:.4f} vs original {acc0.top1:.4f} on {acc.dataset} "
                           f"(n={acc.n}): drop {drop * 100:.2f} points > budget "
                           f"{budgets.max_accuracy_drop * 100:.2f}")
    elif step_eval.fidelity is not None:
        cos = step_eval.fidelity.mean_cosine
        if cos < budgets.min_cosine:
            flags.append("over_budget")
            reasons.append(f"mean output cosine vs original {cos:.4f} < budget {budgets.min_cosine}")
    return flags, reasons


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
