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

SLOWER_TOLERANCE = 1.05  # old-style reports (no interleaved comparison): p50 within 5 % is noise
# Size on disk is exact, so its floor is about what counts as a meaningful change, not about noise:
# a few hundred bytes of metadata or a 1 % larger graph is not a regression anyone deploys around.
BIGGER_FRACTION = 0.02
BIGGER_BYTES = 4096


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

    def evaluate(self, handle: ModelHandle, cancel: Any = None, *, latency: bool = True) -> Measurement:
        """Size, fidelity, accuracy and (unless ``latency=False``: the runner times it against the input) latency."""
        from slimline.core.metrics import fidelity, measure_size
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
        lat = self.latency(handle, cancel=cancel) if latency else None
        return Measurement(size=size, fidelity=fid, accuracy=acc, latency=lat)

    def latency(self, handle: ModelHandle, input_handle: ModelHandle | None = None,
                cancel: Any = None) -> dict[str, LatencyReport]:
        """Fresh latency per batch size; with ``input_handle``, both timed interleaved in one session.

        The step's reports then carry ``vs_input`` (ratio with an interval), which is
        what :func:`flags_for` judges, so "slower" never compares two machine states.
        """
        from slimline.core.metrics import measure_interleaved

        ls = self.settings.latency
        models = [handle] if input_handle is None else [input_handle, handle]
        lat: dict[str, LatencyReport] = {}
        for batch in ls.batch_sizes:
            if cancel is not None:
                cancel.raise_if_cancelled()
            reports = measure_interleaved(models, batch=batch, runs=ls.runs, warmup=ls.warmup,
                                          threads=ls.threads or self.threads, device=self.device,
                                          dataset=self.eval_data, cancel=cancel)
            lat[str(batch)] = reports[-1]
        return lat


def _top1(outputs: np.ndarray, data: Any) -> AccuracyReport:
    """Top-1 from already computed outputs (no second pass over the data)."""
    labels = np.asarray(data.labels)
    pred = outputs.reshape(len(outputs), -1).argmax(-1)
    return AccuracyReport(dataset=getattr(data, "name", "dataset"), n=int(len(labels)),
                          top1=float((pred[: len(labels)] == labels).mean()))


def flags_for(step_eval: Measurement, input_eval: Measurement, original_eval: Measurement,
              settings: Evaluation) -> tuple[list[str], list[str]]:
    """(flags, reasons): bigger / slower than the step's input, noisy latency, over the accuracy budget.

    "slower" comes from the step's interleaved comparison with its input (``vs_input``);
    "noisy" means the timing cannot support a conclusion and says why.

    Takes Measurements or StepResults (a StepResult is a Measurement).
    """
    flags: list[str] = []
    reasons: list[str] = []
    _size_flags(input_eval, step_eval, flags, reasons)
    _latency_flags(input_eval, step_eval, flags, reasons)
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


def _size_flags(input_eval: Measurement, step_eval: Measurement, flags: list[str], reasons: list[str]) -> None:
    a, b = input_eval.size.bytes_on_disk, step_eval.size.bytes_on_disk
    grew = b - a
    if grew > a * BIGGER_FRACTION and grew >= BIGGER_BYTES:
        flags.append("bigger")
        reasons.append(f"bigger on disk: {_mb(a)} → {_mb(b)} (+{grew / a * 100 if a else 100:.1f} %; "
                       f"flagged above +{BIGGER_FRACTION * 100:.0f} % and {BIGGER_BYTES // 1024} kB)")


def _latency_flags(input_eval: Measurement, step_eval: Measurement, flags: list[str], reasons: list[str]) -> None:
    """"slower" only from an interleaved comparison whose whole interval is past the floor; else "noisy"."""
    la, lb = input_eval.latency or {}, step_eval.latency or {}

    def flag(name: str) -> None:
        if name not in flags:
            flags.append(name)

    for batch, rep in lb.items():
        cmp = rep.vs_input
        if cmp is not None:
            if cmp.verdict == "slower":
                flag("slower")
                reasons.append(f"slower at batch {batch}: p50 {cmp.input_p50_ms:.3f} → {rep.p50_ms:.3f} ms "
                               f"({cmp.describe()})")
            if cmp.noisy:
                flag("noisy")
                verdict = ("no slower/faster conclusion" if cmp.verdict == "inconclusive"
                           else f"yet clearly {cmp.verdict}: the whole interval clears the noise margin")
                reasons.append(f"latency at batch {batch} is noisy, {verdict} "
                               f"({'; '.join(cmp.noise_reasons)}); measured {cmp.describe()}")
            continue
        before = la.get(batch)
        if before is None:
            continue
        if rep.noisy or before.noisy:
            flag("noisy")
            reasons.append(f"latency at batch {batch} is noisy, no slower/faster conclusion "
                           f"({'; '.join(rep.noise_reasons + before.noise_reasons)})")
            continue
        if rep.source != before.source or rep.source != "fresh":
            continue  # never a ratio between a cached figure and a fresh one
        # Old-style separate timings: slower only beyond 5 % at p50 AND above the input's own p90.
        if rep.p50_ms > before.p50_ms * SLOWER_TOLERANCE and rep.p50_ms > before.p90_ms:
            flag("slower")
            reasons.append(f"slower at batch {batch}: p50 {before.p50_ms:.3f} → {rep.p50_ms:.3f} ms "
                           f"({rep.p50_ms / before.p50_ms:.2f}×)")


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
