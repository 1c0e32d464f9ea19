"""Mixed precision: how many of the most sensitive layers to spare to meet a perplexity budget.

Sparing means 8-bit weights for a 4-bit run, float activations (accuracy_level 0) for an 8-bit run
whose kernels round activations to int8.

Candidates are prefixes of the layers in sensitivity order (a layer that would break the size cap
is skipped, so one huge layer cannot take the whole allowance). The LM head comes first when it
fits: it writes the logits, so no later layer or norm damps its error, and a per-layer relative
error underrates it (on SmolLM2-135M the 4-bit head alone cost 9 of the 24 points of perplexity
that 4-bit RTN added; llama.cpp's k-quant mixes keep ``output.weight`` at higher precision too).
The perplexity of a prefix is measured, not predicted: doubling until the budget is met, then
bisection between the last miss and the first hit — a handful of measured models however many
layers there are.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slimline.core.lm.score import LMComparison
from slimline.plugins.weight_only.record import SearchTrial

MAX_TRIALS = 12


def greedy_order(errors: dict[str, float], sizes: dict[str, int], share: float, first: tuple[str, ...] = ()
                 ) -> list[str]:
    """Layers (``first`` ones, then by falling sensitivity) that fit together within ``share`` of all
    quantized weights."""
    total = sum(sizes.values())
    budget = share * total
    used = 0
    order: list[str] = []
    ranked = [n for n in first if n in errors] + sorted((n for n in errors if n not in first),
                                                        key=lambda n: (-errors[n], n))
    for name in ranked:
        if used + sizes[name] <= budget:
            order.append(name)
            used += sizes[name]
    return order


def search_promotions(order: list[str], sizes: dict[str, int], measure: Callable[[int], LMComparison],
                     budget: float, progress: Callable[[float], Any] | None = None) -> tuple[int, list[SearchTrial]]:
    """(number of leading layers of ``order`` to spare, every measured candidate)."""
    total = sum(sizes.values()) or 1
    trials: dict[int, SearchTrial] = {}

    def trial(k: int) -> SearchTrial:
        if k not in trials:
            c = measure(k)
            trials[k] = SearchTrial(promoted_layers=k, promoted_share=sum(sizes[n] for n in order[:k]) / total,
                                    perplexity_increase=c.increase, agreement=c.agreement,
                                    within_budget=c.increase <= budget)
            if progress is not None:
                progress(min(len(trials) / MAX_TRIALS, 1.0))
        return trials[k]

    def ordered() -> list[SearchTrial]:
        return list(trials.values())

    if trial(0).within_budget or not order:
        return 0, ordered()
    lo, hi, k = 0, None, 1
    while len(trials) < MAX_TRIALS:
        k = min(k, len(order))
        if trial(k).within_budget:
            hi = k
            break
        lo = k
        if k == len(order):
            break
        k *= 2
    if hi is None:  # the cap is reached without meeting the budget: the best measured candidate
        best = min(trials.values(), key=lambda t: t.perplexity_increase)
        return best.promoted_layers, ordered()
    while hi - lo > 1 and len(trials) < MAX_TRIALS:
        mid = (lo + hi) // 2
        if trial(mid).within_budget:
            hi = mid
        else:
            lo = mid
    return hi, ordered()
