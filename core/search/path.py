"""The greedy path: from the untouched model to every layer at its strongest level, cheapest damage first.

Each layer climbs its levels one at a time (float → INT8, dense → 30 % → 50 % zeros, ...). At every
step the move with the least estimated damage per byte saved is taken, so the path is the sensitivity
ranking turned into a sequence of ever smaller models; exclusion lists, mixed precision, per-layer
sparsity and per-layer rank are all the same walk. Damage estimates are in one unit for every layer:
the loss of output fidelity (1 − cosine of the model's outputs vs the original's) with only that layer
changed, measured end to end where the sensitivity analysis did, else its cheap score scaled by how
cheap and measured figures related on the measured layers.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from slimline.core.sensitivity.models import SensitivityResult
from slimline.core.sensitivity.protocol import KEEP, Level

EPS = 1e-12


@dataclass(frozen=True)
class Move:
    layer: str
    level: str
    damage: float     # added estimated damage
    saved: float      # added bytes saved


def damages(sens: SensitivityResult) -> dict[tuple[str, str], float]:
    """Estimated damage of each (layer, level): measured fidelity loss, else the scaled cheap score."""
    measured: dict[tuple[str, str], float] = {}
    cheap: dict[tuple[str, str], float] = {}
    for row in sens.rows:
        for lv in row.levels:
            c = lv.output_error if lv.output_error is not None else lv.weight_error
            if c is not None:
                cheap[(row.layer, lv.level)] = float(c)
            if lv.alone is not None:
                measured[(row.layer, lv.level)] = max(float(lv.alone.fidelity_loss), 0.0)
            elif lv.all_but is not None and sens.uniform is not None:
                measured[(row.layer, lv.level)] = max(sens.uniform.fidelity_loss - lv.all_but.fidelity_loss, 0.0)
    ratios = sorted(measured[k] / cheap[k] for k in measured if cheap.get(k, 0.0) > EPS)
    scale = ratios[len(ratios) // 2] if ratios else 1.0
    out = {k: v * scale for k, v in cheap.items()}
    out.update(measured)
    return out


def greedy_path(layers: list[str], levels: list[Level], damage: dict[tuple[str, str], float],
                saved: Callable[[str, str], float]) -> list[Move]:
    """Moves in the order the search takes them (each layer's levels in order, least damage per byte first)."""
    order = [lv.key for lv in sorted(levels, key=lambda lv: lv.strength)]
    current = {ly: KEEP for ly in layers}
    moves: list[Move] = []
    while True:
        best: tuple[float, Move] | None = None
        for ly in layers:
            here = current[ly]
            nxt = order[0] if here == KEEP else (order[order.index(here) + 1] if order.index(here) + 1 < len(order)
                                                else None)
            if nxt is None:
                continue
            d0 = 0.0 if here == KEEP else damage.get((ly, here), 0.0)
            s0 = 0.0 if here == KEEP else saved(ly, here)
            dd = max(damage.get((ly, nxt), d0) - d0, 0.0)
            ds = saved(ly, nxt) - s0
            if ds <= 0:   # a level that saves nothing more (a rank over break-even) is not worth a step
                current[ly] = nxt
                best = best or (float("inf"), Move(ly, nxt, 0.0, 0.0))
                continue
            cost = dd / ds
            if best is None or cost < best[0]:
                best = (cost, Move(ly, nxt, dd, ds))
        if best is None:
            return moves
        move = best[1]
        current[move.layer] = move.level
        if move.saved > 0:
            moves.append(move)


def settings_after(moves: list[Move], n: int, skip: frozenset[int] = frozenset()) -> dict[str, str]:
    """The per-layer settings after the first ``n`` moves (moves whose index is in ``skip`` left out;
    a later level of a layer needs its earlier one, so a skipped move blocks that layer's later moves)."""
    out: dict[str, str] = {}
    blocked: set[str] = set()
    for i, m in enumerate(moves[:n]):
        if i in skip or m.layer in blocked:
            blocked.add(m.layer)
            continue
        out[m.layer] = m.level
    return out


__all__ = ["Move", "damages", "greedy_path", "settings_after"]
