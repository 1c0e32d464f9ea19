"""Measure one model the same way for every step: size, latency, accuracy, fidelity.

Fidelity is always against the pipeline's original model, so a chain of small
losses cannot hide. Flags compare a step's output with its input: a step that
made the model bigger or slower, or broke the accuracy budget, is never shown
as a win.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from slimline.core.handle import ModelHandle
from slimline.core.metrics import AccuracyReport, LatencyReport
from slimline.core.pipeline import Evaluation
from slimline.core.results import Fidelity, Measurement
from slimline.core.tasks import TaskGuess, budget_check, fidelity_for, resolve_task

SLOWER_TOLERANCE = 1.05  # p50 within 5 % is measurement noise on this class of machine


@dataclass
class Evaluator:
    """Measures every model of a run the same way; fidelity is always against the first model measured."""

    settings: Evaluation
    eval_data: Any = None           # Dataset | None
    reference_outputs: np.ndarray | None = None
    reference_accuracy: float | None = None
    threads: int = 0
    device: str = "cpu"
    task: TaskGuess | None = None   # decided on the original (its config survives conversion only there)
    progress: Callable[[float, str], None] | None = field(default=None, repr=False)
    _random: Any = field(default=None, repr=False)
    _capped: Any = field(default=None, repr=False)

    def data_for(self, handle: ModelHandle) -> tuple[Any, str]:
        """The evaluation dataset (first ``max_rows`` rows), or random inputs when there is none."""
        if self.eval_data is not None:
            if self._capped is None:
                cap = self.settings.max_rows
                self._capped = self.eval_data.take(cap) if cap else self.eval_data
            return self._capped, "dataset"
        if self._random is None:
            from slimline.core.data import random_dataset

            self._random = random_dataset(handle, 32, seed=0)
        return self._random, "random"

    def _predict(self, session: Any, data: Any, cancel: Any) -> np.ndarray:
        """First output over all rows, with rows/s and ETA progress (one pass, no second run)."""
        from slimline.core.runtime import predict

        n = len(data)
        t0 = time.perf_counter()

        def on_progress(fraction: float, _msg: str) -> None:
            if cancel is not None:
                cancel.raise_if_cancelled()
            if self.progress is None:
                return
            done = int(round(fraction * n))
            dt = max(time.perf_counter() - t0, 1e-9)
            rate = done / dt
            eta = (n - done) / rate if rate > 0 else 0.0
            self.progress(0.8 * fraction, f"evaluating {done}/{n} rows, {rate:.0f} rows/s, ETA {eta:.0f} s")

        batch = 64 if n <= 4096 else 256
        return predict(session, data, batch_size=batch, progress=on_progress)[0]

    def evaluate(self, handle: ModelHandle, cancel: Any = None) -> Measurement:
        from slimline.core.metrics import fidelity, measure_latency, measure_size
        from slimline.core.runtime import open_session

        size = measure_size(handle)
        if not handle.capabilities.run:
            return Measurement(size=size, note=handle.capabilities.reason)
        data, kind = self.data_for(handle)
        session = open_session(handle, device=self.device, threads=self.threads)
        t_eval = time.perf_counter()
        outputs = self._predict(session, data, cancel)
        per_row_s = (time.perf_counter() - t_eval) / max(len(data), 1)
        if cancel is not None:
            cancel.raise_if_cancelled()
        if self.reference_outputs is None:
            self.reference_outputs = outputs
        if self.task is None:
            self.task = resolve_task(self.settings.task, handle, outputs, data if kind == "dataset" else None)
        task = self.task.task
        tf = fidelity_for(task, self.reference_outputs, outputs, data)
        fid = Fidelity(**fidelity(self.reference_outputs, outputs).model_dump(), input_kind=kind,
                       dataset=getattr(data, "name", "random inputs"), task=task, task_reason=self.task.reason,
                       metric=tf.metric, value=tf.value, higher_is_better=tf.higher_is_better, worst=tf.worst,
                       extra=tf.extra)
        acc = None
        if kind == "dataset" and task == "classification" and _class_labels(outputs, data):
            acc = _top1(outputs, data)
            if self.reference_accuracy is None:
                self.reference_accuracy = acc.top1
        lat: dict[str, LatencyReport] = {}
        ls = self.settings.latency
        for i, batch in enumerate(ls.batch_sizes):
            if cancel is not None:
                cancel.raise_if_cancelled()
            if self.progress is not None:
                self.progress(0.8 + 0.2 * i / len(ls.batch_sizes), f"timing batch {batch}")
            run_s = _one_run_s(session, data, batch)  # batch 1 is often far slower per row than batch 64
            runs, warmup = timing_runs(ls.runs, ls.warmup, run_s, per_row_s * len(data))
            rep = measure_latency(handle, batch=batch, runs=runs, warmup=warmup,
                                  threads=ls.threads or self.threads, device=self.device, dataset=self.eval_data)
            if runs < ls.runs:
                rep.notes.append(f"{runs} timed runs instead of {ls.runs}: one run takes about "
                                 f"{run_s:.2f} s, so timing is capped near the time the evaluation took")
            lat[str(batch)] = rep
        return Measurement(size=size, fidelity=fid, accuracy=acc, latency=lat)


MIN_TIMING_S = 5.0  # timing may always take this long, whatever the model


def timing_runs(runs: int, warmup: int, run_s: float, eval_s: float) -> tuple[int, int]:
    """(runs, warmup) so timing a big model costs about what evaluating the data cost, not 60 passes.

    Why: 10 warm-up + 50 timed runs at batch 1 of a 20M-parameter transformer took longer than
    the whole evaluation pass over 512 sentences. Small models keep the settings as they are;
    at least 5 timed runs and 1 warm-up remain, so percentiles still mean something.
    """
    if run_s <= 0 or (runs + warmup) * run_s <= max(MIN_TIMING_S, eval_s):
        return runs, warmup
    budget = max(MIN_TIMING_S, eval_s)
    capped = max(5, min(runs, int(budget / run_s)))
    return capped, max(1, min(warmup, capped // 5))


def _one_run_s(session: Any, data: Any, batch: int) -> float:
    """Seconds for one run at ``batch`` rows (the first rows, tiled when fewer); 0 when it cannot run."""
    try:
        feeds = {k: np.resize(v, (batch, *v.shape[1:])) for k, v in data.inputs.items()}
        t0 = time.perf_counter()
        session.run(feeds)
        return time.perf_counter() - t0
    except Exception:  # noqa: BLE001 - the timing itself will report the real error
        return 0.0


def _top1(outputs: np.ndarray, data: Any) -> AccuracyReport:
    """Top-1 from already computed outputs (no second pass over the data)."""
    labels = np.asarray(data.labels)
    pred = outputs.reshape(len(outputs), -1).argmax(-1)
    return AccuracyReport(dataset=getattr(data, "name", "dataset"), n=int(len(labels)),
                          top1=float((pred[: len(labels)] == labels).mean()))


def _class_labels(outputs: np.ndarray, data: Any) -> bool:
    """Real integer class labels, one per row, that index the class-score output."""
    labels = getattr(data, "labels", None)
    if labels is None or getattr(data, "kind", "real") != "real":
        return False
    labels = np.asarray(labels)
    return (labels.ndim == 1 and labels.dtype.kind in "iu" and outputs.ndim == 2 and len(labels) == len(outputs)
            and bool(labels.size) and int(labels.max()) < outputs.shape[-1])


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
        fid = step_eval.fidelity
        if fid.task and fid.metric and fid.value is not None:  # the task's own check (slimline.core.tasks)
            from slimline.core.tasks import TaskFidelity

            ok, why = budget_check(fid.task, TaskFidelity(
                task=fid.task, metric=fid.metric, value=fid.value, higher_is_better=fid.higher_is_better,
                worst=fid.worst, n=fid.n, dataset=fid.dataset,
                extra={k: float("inf") if v is None else v for k, v in fid.extra.items()}), budgets)
            if not ok:
                flags.append("over_budget")
                reasons.append(f"{why} (vs original on {fid.dataset or fid.input_kind}, n={fid.n})")
        elif fid.mean_cosine < budgets.min_cosine:  # records from before tasks existed
            flags.append("over_budget")
            reasons.append(f"mean output cosine vs original {fid.mean_cosine:.4f} < budget {budgets.min_cosine}")
    return flags, reasons


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
