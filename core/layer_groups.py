"""Repeated blocks (decoder layers, encoder layers, ResNet stages) grouped for the layer table and the CLI.

A 30-block LLM has 270 weight tensors that are the same nine tensors thirty times; listed flat they
bury the embeddings and the final norm. A group is a run of consecutive indices under one prefix
(``model.layers.0`` … ``model.layers.29``) whose blocks hold the same tensor names. Shapes may differ
(a pruned model keeps its blocks grouped); a block whose tensor names differ (a ResNet stage's first
block with its downsample) starts a new run. Groups are computed from names alone, so they work for
every format and cost nothing.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from slimline.core.stats import LayerRow

MIN_BLOCKS = 2          # fewer repeats are not worth a group
MIN_TENSORS = 2         # a "block" of one tensor is a plain layer (Sequential index), not a block


class BlockGroup(BaseModel):
    """Consecutive blocks ``prefix.i`` with the same tensor names; ``names`` in model order."""

    model_config = ConfigDict(frozen=True)

    prefix: str                 # "model.layers" ("" when the index is the first name component)
    indices: list[int]          # consecutive block numbers
    members: list[str]          # tensor names inside one block ("self_attn.q_proj.weight", ...)
    names: list[str]            # every tensor of the group
    params: int
    bytes: int

    @property
    def title(self) -> str:
        """'model.layers.0 … 29' — what the table and the CLI show for the collapsed group."""
        head = f"{self.prefix}." if self.prefix else ""
        return f"{head}{self.indices[0]} … {self.indices[-1]}"

    @property
    def blocks(self) -> int:
        return len(self.indices)

    def describe(self) -> str:
        return f"{self.blocks} blocks × {len(self.members)} tensors"


def _get(row: Any, key: str) -> Any:
    return row.get(key) if isinstance(row, dict) else getattr(row, key, None)


def split_block(name: str) -> tuple[str, int, str] | None:
    """('model.layers', 3, 'mlp.up_proj.weight') for 'model.layers.3.mlp.up_proj.weight'; None without an index.

    The first all-digit name component is the block index: nested numbering (experts inside a layer)
    stays part of the member name.
    """
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():
            return ".".join(parts[:i]), int(part), ".".join(parts[i + 1:])
    return None


def group_blocks(rows: Sequence[Any]) -> list[BlockGroup]:
    """The groups of repeated blocks among ``rows`` (LayerRow objects or dicts with name/params/bytes)."""
    blocks: dict[str, dict[int, list[Any]]] = {}
    for r in rows:
        parsed = split_block(str(_get(r, "name")))
        if parsed is not None:
            prefix, idx, _ = parsed
            blocks.setdefault(prefix, {}).setdefault(idx, []).append(r)
    groups: list[BlockGroup] = []
    for prefix, by_index in blocks.items():
        run: list[int] = []
        sig: tuple[str, ...] = ()
        for idx in sorted(by_index):
            members = tuple(sorted(split_block(str(_get(r, "name")))[2] for r in by_index[idx]))  # type: ignore[index]
            if run and idx == run[-1] + 1 and members == sig:
                run.append(idx)
                continue
            _close(groups, prefix, run, sig, by_index)
            run, sig = [idx], members
        _close(groups, prefix, run, sig, by_index)
    order = {str(_get(r, "name")): i for i, r in enumerate(rows)}
    return sorted(groups, key=lambda g: min(order[n] for n in g.names))


def _close(groups: list[BlockGroup], prefix: str, run: list[int], sig: tuple[str, ...],
           by_index: dict[int, list[Any]]) -> None:
    if len(run) < MIN_BLOCKS or len(sig) < MIN_TENSORS:
        return
    rows = [r for i in run for r in by_index[i]]
    groups.append(BlockGroup(prefix=prefix, indices=list(run), members=list(sig),
                             names=[str(_get(r, "name")) for r in rows],
                             params=sum(int(_get(r, "params") or 0) for r in rows),
                             bytes=sum(int(_get(r, "bytes") or 0) for r in rows)))


def group_of(groups: Sequence[BlockGroup]) -> dict[str, int]:
    """Tensor name -> index of its group in ``groups``."""
    return {n: i for i, g in enumerate(groups) for n in g.names}


def group_row(group: BlockGroup, rows: Sequence[Any]) -> LayerRow:
    """One summary row for a group: sums, and statistics pooled exactly over every value of its tensors.

    Mean, |w| mean and outlier fraction are weighted by each tensor's finite-value count, sparsity (zeros
    over all values) by its size; the standard deviation is pooled from per-tensor means and variances.
    A statistic missing on any member (not computed yet) is missing here too.
    """
    wanted = set(group.names)
    mine = [r for r in rows if str(_get(r, "name")) in wanted]
    dtypes = sorted({str(_get(r, "dtype")) for r in mine})
    out = LayerRow(name=group.title, layer=group.prefix, op_type=group.describe(), shape=[],
                   dtype=dtypes[0] if len(dtypes) == 1 else "mixed",
                   params=sum(int(_get(r, "params") or 0) for r in mine),
                   bytes=sum(int(_get(r, "bytes") or 0) for r in mine))
    if not mine or any(_get(r, "mean") is None or _get(r, "std") is None for r in mine):
        return out
    n = [max(int(_get(r, "params") or 0) - int(_get(r, "nan_count") or 0) - int(_get(r, "inf_count") or 0), 0)
         for r in mine]
    total = sum(n)
    if total == 0:
        return out

    sizes = [int(_get(r, "params") or 0) for r in mine]

    def weighted(key: str, by: list[int] = n) -> float | None:
        vals = [_get(r, key) for r in mine]
        if any(v is None for v in vals) or not sum(by):
            return None
        return sum(float(v) * k for v, k in zip(vals, by)) / sum(by)

    mean = weighted("mean") or 0.0
    second = sum(k * (float(_get(r, "std")) ** 2 + float(_get(r, "mean")) ** 2) for r, k in zip(mine, n)) / total
    mins = [_get(r, "min") for r in mine if _get(r, "min") is not None]
    maxs = [_get(r, "max") for r in mine if _get(r, "max") is not None]
    return out.model_copy(update={
        "min": min(mins) if mins else None, "max": max(maxs) if maxs else None, "mean": mean,
        "std": math.sqrt(max(second - mean * mean, 0.0)), "mean_abs": weighted("mean_abs"),
        "sparsity": weighted("sparsity", sizes), "outlier_frac": weighted("outlier_frac"),
        "nan_count": sum(int(_get(r, "nan_count") or 0) for r in mine),
        "inf_count": sum(int(_get(r, "inf_count") or 0) for r in mine)})
