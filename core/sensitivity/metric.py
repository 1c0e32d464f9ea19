"""Score a variant's outputs the task's way, against the original, on the same evaluation rows.

The math and the budgets are the engine's own (slimline.core.tasks.fidelity_for / budget_check,
slimline.core.fidelity); this module only picks the headline a ranking sorts by: top-1 accuracy
when the rows have class labels (the budget is the accuracy drop), the perplexity increase of a
language model when the rows have token ids, else the task's fidelity metric.

A causal LM on a text file (the run's token windows, slimline.core.lm.evaluate.text_bundle) is judged
by :class:`LMMetricProbe` instead: perplexity on the windows, against the original's, as
slimline.core.lm.score computes it for every LM run (the budget: perplexity increase ≤ x %).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slimline.core.pipeline import Budgets
from slimline.core.sensitivity.models import EndMetric
from slimline.core.tasks import TaskGuess, budget_check, fidelity_for

PPL_KEY = "perplexity increase"


class MetricProbe:
    """Holds the original's outputs; ``score(outputs)`` gives an :class:`EndMetric` for a variant."""

    def __init__(self, task: TaskGuess, reference: np.ndarray, dataset: Any, budgets: Budgets | None = None,
                 kind: str = "dataset") -> None:
        from slimline.core.fidelity import top1_accuracy

        self.task, self.reference, self.dataset = task, np.asarray(reference), dataset
        self.budgets = budgets or Budgets()
        self.kind = kind
        labels = getattr(dataset, "labels", None)
        self.labels = np.asarray(labels) if labels is not None and _class_labels(self.reference, labels, kind) \
            and task.task == "classification" else None
        name = str(getattr(dataset, "name", "") or ("random inputs" if kind == "random" else "data"))
        n = int(self.reference.shape[0]) if self.reference.ndim else 1
        same = fidelity_for(task.task, self.reference, self.reference, dataset, self.budgets.dense_map_threshold)
        if self.labels is not None:
            self.name = f"top-1 on {name} (n={n})"
            self.higher_is_better = True
            self.baseline = top1_accuracy(self.reference, self.labels)
        elif PPL_KEY in same.extra:
            self.name = f"{PPL_KEY} on {name} (n={n})"
            self.higher_is_better = False
            self.baseline = 0.0
        else:
            self.name = f"{same.metric} vs original on {name} (n={n}{', RANDOM inputs' if kind == 'random' else ''})"
            self.higher_is_better = same.higher_is_better
            self.baseline = float(same.value)

    def score(self, outputs: Any) -> EndMetric:
        from slimline.core.fidelity import row_cosines, top1_accuracy

        got = np.asarray(outputs)
        tf = fidelity_for(self.task.task, self.reference, got, self.dataset, self.budgets.dense_map_threshold)
        fid_loss = 1.0 - float(row_cosines(self.reference, got).mean()) if got.shape == self.reference.shape else 1.0
        if self.labels is not None:
            value = top1_accuracy(got, self.labels) if got.shape == self.reference.shape else 0.0
            drop = self.baseline - value
            ok = drop <= self.budgets.max_accuracy_drop + 1e-12
            why = "" if ok else (f"top-1 drop {drop * 100:.2f} points > budget "
                                 f"{self.budgets.max_accuracy_drop * 100:.2f}")
            return EndMetric(value=value, loss=drop, fidelity_loss=fid_loss, within_budget=ok, reason=why)
        ok, why = budget_check(self.task.task, tf, self.budgets)
        value = float(tf.extra.get(PPL_KEY, np.inf)) if self.name.startswith(PPL_KEY) else float(tf.value)
        if not np.isfinite(value):
            return EndMetric(value=value, loss=float("inf"), fidelity_loss=fid_loss, within_budget=False,
                             reason=why or "not finite")
        loss = (self.baseline - value) if self.higher_is_better else (value - self.baseline)
        return EndMetric(value=value, loss=float(loss), fidelity_loss=fid_loss, within_budget=ok, reason=why)


def _class_labels(reference: np.ndarray, labels: Any, kind: str) -> bool:
    """Real integer class labels, one per row, that index the class-score output (as the evaluation requires)."""
    lab = np.asarray(labels)
    return (kind == "dataset" and lab.ndim == 1 and lab.dtype.kind in "iu" and reference.ndim == 2
            and len(lab) == len(reference) and bool(lab.size) and int(lab.max()) < reference.shape[-1])


@dataclass
class LMScores:
    """A language model on the probe's windows: each window's summary, and log p of the original's top-k (KL)."""

    summaries: list[Any]
    logp_of_ref_top: list[np.ndarray] = field(default_factory=list)


def lm_budget(increase: float, agreement: float, kl: float, budgets: Budgets) -> tuple[bool, str]:
    """Whether an LM variant meets the budgets, judged by the point estimates (the search's rule).

    Why not the pipeline's rule (over budget only when the whole 95 % interval is above): a search that
    picks the smallest model "not clearly over" would settle on models whose measured increase is above
    the budget; here the measured increase itself must be within it."""
    fails = []
    b = budgets.token_max_perplexity_increase
    if not np.isfinite(increase) or increase > b + 1e-12:
        fails.append(f"perplexity {increase * 100:+.2f} % > budget +{b * 100:g} %")
    if agreement < budgets.token_min_agreement:
        fails.append(f"next-token agreement {agreement:.4f} < budget {budgets.token_min_agreement}")
    if kl > budgets.token_max_kl:
        fails.append(f"KL ≥ {kl:.4f} nats/token (a lower bound) > budget {budgets.token_max_kl}")
    return not fails, "; ".join(fails)


class LMMetricProbe:
    """The perplexity increase of a language model on text windows vs the original's (core/lm/score)."""

    higher_is_better = False
    baseline = 0.0

    def __init__(self, task: TaskGuess, reference: LMScores, windows: Any, budgets: Budgets | None = None) -> None:
        from slimline.core.lm.score import perplexity

        self.task, self.reference, self.windows = task, reference, windows
        self.budgets = budgets or Budgets()
        self.kind = "dataset"
        self.original = perplexity(reference.summaries)
        self.name = f"{PPL_KEY} on {windows.describe()} (n={windows.count} windows)"

    def score(self, outputs: Any) -> EndMetric:
        """``outputs``: the variant's :class:`LMScores` on the same windows. The loss is the perplexity increase
        (0.05 = +5 %); the fidelity loss is KL(original ‖ variant) over the original's top-k + rest, nats/token."""
        from slimline.core.lm.score import compare

        got: LMScores = outputs
        c = compare(self.reference.summaries, got.summaries, got.logp_of_ref_top)
        ok, why = lm_budget(c.increase, c.agreement, c.kl_topk, self.budgets)
        if not np.isfinite(c.increase):
            return EndMetric(value=float("inf"), loss=float("inf"), fidelity_loss=float("inf"), within_budget=False,
                             reason=why or "not finite")
        return EndMetric(value=float(c.increase), loss=float(c.increase), fidelity_loss=float(c.kl_topk),
                         within_budget=ok, reason=why)


__all__ = ["LMMetricProbe", "LMScores", "MetricProbe", "lm_budget"]
