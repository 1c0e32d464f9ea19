"""How much excluding the top-k layers of a ranking recovers: the check that a ranking means something.

Every layer at one level except the first ``k`` of an order, for several ``k``, each built by the step and
scored end to end. A good ranking recovers the most with the fewest exclusions; a random or reversed
order recovers less for the same ``k``. Used by the tests and the benchmarks that show the ranking works.
"""
from __future__ import annotations

import shutil
from typing import Any

from slimline.core.sensitivity.models import EndMetric
from slimline.core.sensitivity.protocol import KEEP


def exclusion_curve(prep: Any, lw: Any, order: list[str], level: str, ks: list[int],
                    cancel: Any = None) -> list[EndMetric]:
    """The end metric with every layer at ``level`` except the first ``k`` of ``order``, for each ``k``."""
    names = [ly.name for ly in lw.layers]
    out: list[EndMetric] = []
    work = prep.work / "curve"
    for k in ks:
        if cancel is not None:
            cancel.raise_if_cancelled()
        left_out = set(order[:k])
        settings = {n: (KEEP if n in left_out else level) for n in names}
        shutil.rmtree(work, ignore_errors=True)
        handle = lw.build(settings, work) if any(v != KEEP for v in settings.values()) else prep.step_input
        out.append(prep.probe.score(prep.outputs(handle)))
        shutil.rmtree(work, ignore_errors=True)
    return out


def area(curve: list[EndMetric], fidelity: bool = False) -> float:
    """Sum of the losses over the curve (smaller = the order recovers sooner)."""
    return float(sum(m.fidelity_loss if fidelity else m.loss for m in curve))


__all__ = ["area", "exclusion_curve"]
