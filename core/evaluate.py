"""Measure one model the same way for every step: size, latency, accuracy, fidelity.

Fidelity is always against the pipeline's original model, so a chain of small
losses cannot hide. Flags compare a step's output with its input: a step that
made the model bigger or slower, or broke the accuracy budget, is never shown
as a win.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slimline.core.handle import ModelHandle
from slimline.core.metrics import AccuracyReport, LatencyReport
from slimline.core.pipeline import Evaluation
from slimline.core.results import Fidelity, Measurement
from slimline.core.tasks import TaskGuess, budget_check, fidelity_for, resolve_task

SLOWER_TOLERANCE = 1.05  # old-style reports (no interleaved comparison): p50 within 5 % is noise
# Size on disk is exact, so its floor is about what counts as a meaningful change, not about noise:
# a few hundred bytes of metadata or a 1 % larger graph is not a regression anyone deploys around.
BIGGER_FRACTION = 0.02
BIGGER_BYTES = 4096


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
    # A language model on a text file (slimline.core.lm.evaluate.LMEvaluator): perplexity, generations and
    # prefill/decode timing replace rows, fidelity and per-batch latency.
    lm: Any = None
    _random: Any = field(default=None, repr=False)
    _capped: Any = field(default=None, repr=False)
    # path -> ({batch: seconds for one run}, seconds the evaluation pass took): caps timing of big models
    _timing_hints: dict[str, tuple[dict[int, float], float]] = field(default_factory=dict, repr=False)

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

    def evaluate(self, handle: ModelHandle, cancel: Any = None, *, latency: bool = True,
                 reuse: Measurement | None = None) -> Measurement:
        """Size, fidelity, accuracy and (unless ``latency=False``: the runner times it against the input) latency.

        A language model (``self.lm``) gets its LM report instead; ``reuse`` (a cached measurement
        of the same model) spares its perplexity pass, never its timing.
        """
        from slimline.core.metrics import fidelity, measure_size
        from slimline.core.runtime import open_session

        if self.lm is not None and reuse is not None and reuse.lm is not None:
            size = reuse.size
        else:
            size = measure_size(handle)
        if not handle.capabilities.run:
            return Measurement(size=size, note=handle.capabilities.reason)
        if self.lm is not None:
            self.lm.progress = self.progress
            return Measurement(size=size, lm=self.lm.measure(handle, cancel, reuse=reuse.lm if reuse else None))
        data, kind = self.data_for(handle)
        session = open_session(handle, device=self.device, threads=self.threads)
        t_eval = time.perf_counter()
        outputs = self._predict(session, data, cancel)
        eval_s = time.perf_counter() - t_eval
        # batch 1 is often far slower per row than batch 64: one real run per batch size tells
        self._timing_hints[handle.path] = ({b: _one_run_s(session, data, b)
                                            for b in self.settings.latency.batch_sizes}, eval_s)
        if cancel is not None:
            cancel.raise_if_cancelled()
        if self.reference_outputs is None:
            self.reference_outputs = outputs
        if self.task is None:
            self.task = resolve_task(self.settings.task, handle, outputs, data if kind == "dataset" else None)
        task = self.task.task
        tf = fidelity_for(task, self.reference_outputs, outputs, data,
                          threshold=self.settings.budgets.dense_map_threshold)
        fid = Fidelity(**fidelity(self.reference_outputs, outputs).model_dump(), input_kind=kind,
                       dataset=getattr(data, "name", "random inputs"), task=task, task_reason=self.task.reason,
                       metric=tf.metric, value=tf.value, higher_is_better=tf.higher_is_better, worst=tf.worst,
                       extra=tf.extra)
        acc = None
        if kind == "dataset" and task == "classification" and _class_labels(outputs, data):
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
        for i, batch in enumerate(ls.batch_sizes):
            if cancel is not None:
                cancel.raise_if_cancelled()
            if self.progress is not None:
                self.progress(0.8 + 0.2 * i / len(ls.batch_sizes), f"timing batch {batch}")
            runs, warmup, why = self._timing_plan(models, batch)
            reports = measure_interleaved(models, batch=batch, runs=runs, warmup=warmup,
                                          threads=ls.threads or self.threads, device=self.device,
                                          dataset=self.eval_data, cancel=cancel)
            if why:
                reports[-1].notes.append(why)
            lat[str(batch)] = reports[-1]
        return lat

    def _timing_plan(self, models: list[ModelHandle], batch: int) -> tuple[int, int, str]:
        """Runs/warm-up for one batch size, capped for big models by what their evaluation cost."""
        ls = self.settings.latency
        hints = [self._timing_hints.get(m.path) for m in models]
        if any(h is None for h in hints):
            return ls.runs, ls.warmup, ""
        run_s = max(h[0].get(batch, 0.0) for h in hints if h)
        eval_s = max(h[1] for h in hints if h)
        runs, warmup = timing_runs(ls.runs, ls.warmup, run_s, eval_s)
        if runs >= ls.runs:
            return runs, warmup, ""
        return runs, warmup, (f"{runs} timed runs instead of {ls.runs}: one run takes about {run_s:.2f} s, "
                              "so timing is capped near the time the evaluation took")


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
    if step_eval.lm is not None:  # a language model: perplexity (by its interval), agreement, KL, decode speed
        from slimline.core.lm.evaluate import lm_flags

        lm_flag_list, lm_reasons = lm_flags(step_eval.lm, input_eval.lm, budgets)
        return flags + [f for f in lm_flag_list if f not in flags], reasons + lm_reasons
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
