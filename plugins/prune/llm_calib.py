"""Calibration text through an LM's decoder blocks: block inputs, block influence, input statistics.

Why block by block: Wanda and SparseGPT prune one decoder block at a time and feed the
next block the outputs of the blocks already pruned (the "sequential" variant of both
papers), so errors made early are seen, and partly absorbed, later. That needs each
block's call arguments (hidden states plus the attention mask, rotary embeddings… the
model computes once): one capture pass records them for every block, since models with
sliding-window layers pass different masks to different blocks. Hooks on the last block
stop the capture pass before the LM head (the largest matmul of a small LM).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch


class _Stop(Exception):
    """Raised from the last block's hook: the rest of the forward pass is not needed."""


@dataclass
class BlockCall:
    """What the model passed to one block besides the hidden states."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass
class Captured:
    """Per calibration batch: block 0's input hidden states and every block's call arguments."""

    hidden: list["torch.Tensor"] = field(default_factory=list)
    calls: list[list[BlockCall]] = field(default_factory=list)


def _split_hidden(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple["torch.Tensor", BlockCall]:
    if args:
        return args[0], BlockCall(tuple(args[1:]), dict(kwargs))
    kw = dict(kwargs)
    return kw.pop("hidden_states"), BlockCall((), kw)


def first_tensor(out: Any) -> "torch.Tensor":
    """A decoder block returns its hidden states, alone or first in a tuple."""
    return out[0] if isinstance(out, (tuple, list)) else out


def block_forward(block: "torch.nn.Module", hidden: "torch.Tensor", call: BlockCall) -> "torch.Tensor":
    return first_tensor(block(hidden, *call.args, **call.kwargs))


def _run_stopped(model: "torch.nn.Module", ids: "torch.Tensor") -> None:
    try:
        model(input_ids=ids, use_cache=False)
    except _Stop:
        pass


def capture(model: "torch.nn.Module", blocks: Any, batches: Iterable["torch.Tensor"],
            check_cancel: Callable[[], None]) -> Captured:
    """Record block 0's inputs and every block's call arguments for each batch (no LM head run)."""
    import torch

    out = Captured()
    current: list[BlockCall | None] = []

    def pre(i: int) -> Any:
        def fn(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            hidden, call = _split_hidden(args, kwargs)
            if i == 0:
                out.hidden.append(hidden.detach())
            current[i] = call
        return fn

    def stop(_m: Any, _i: Any, _o: Any) -> None:
        raise _Stop()

    handles = [b.register_forward_pre_hook(pre(i), with_kwargs=True) for i, b in enumerate(blocks)]
    handles.append(blocks[len(blocks) - 1].register_forward_hook(stop))
    try:
        with torch.no_grad():
            for ids in batches:
                check_cancel()
                current[:] = [None] * len(blocks)
                _run_stopped(model, ids)
                out.calls.append([c if c is not None else BlockCall((), {}) for c in current])
    finally:
        for h in handles:
            h.remove()
    return out


def block_influence(model: "torch.nn.Module", blocks: Any, batches: Iterable["torch.Tensor"],
                    check_cancel: Callable[[], None]) -> np.ndarray:
    """ShortGPT's block influence: mean over tokens of 1 − cos(block input, block output).

    A block that barely turns the residual stream (influence near 0) changes little when
    removed. Position 0 is left out: it has no context and carries the attention-sink
    outlier, whose near-constant direction would make every block look unimportant.
    """
    import torch
    import torch.nn.functional as F

    sums = np.zeros(len(blocks), dtype=np.float64)
    counts = np.zeros(len(blocks), dtype=np.float64)
    inputs: dict[int, torch.Tensor] = {}

    def pre(i: int) -> Any:
        def fn(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            inputs[i] = _split_hidden(args, kwargs)[0]
        return fn

    def post(i: int) -> Any:
        def fn(_m: Any, _args: Any, output: Any) -> None:
            h_in = inputs.pop(i)[:, 1:].float()
            h_out = first_tensor(output)[:, 1:].float()
            dist = 1.0 - F.cosine_similarity(h_in, h_out, dim=-1)
            sums[i] += float(dist.sum())
            counts[i] += dist.numel()
            if i == len(blocks) - 1:
                raise _Stop()
        return fn

    handles = [b.register_forward_pre_hook(pre(i), with_kwargs=True) for i, b in enumerate(blocks)]
    handles += [b.register_forward_hook(post(i)) for i, b in enumerate(blocks)]
    try:
        with torch.no_grad():
            for ids in batches:
                check_cancel()
                _run_stopped(model, ids)
    finally:
        for h in handles:
            h.remove()
    return sums / np.maximum(counts, 1)


class InputStats:
    """Accumulate, per Linear, the sum over tokens of x² per input feature ("sq") or XᵀX ("gram").

    Linears fed the same tensor (q/k/v, gate/up) share one computation: the hook keeps the
    last input it saw and its statistic.
    """

    def __init__(self, linears: dict[str, "torch.nn.Module"], kind: str) -> None:
        self.linears, self.kind = linears, kind
        self.acc: dict[str, torch.Tensor] = {}
        self.tokens: dict[str, int] = {}
        self._memo: tuple[Any, Any] = (None, None)
        self._handles: list[Any] = []

    def _stat(self, x: "torch.Tensor") -> "torch.Tensor":
        if self._memo[0] is x:
            return self._memo[1]
        x2 = x.detach().reshape(-1, x.shape[-1]).float()
        stat = x2.T @ x2 if self.kind == "gram" else (x2 * x2).sum(dim=0)
        self._memo = (x, stat)
        return stat

    def __enter__(self) -> "InputStats":
        def hook(name: str) -> Any:
            def fn(_m: Any, inp: tuple[Any, ...], _out: Any) -> None:
                x = inp[0]
                stat = self._stat(x)
                self.acc[name] = self.acc[name] + stat if name in self.acc else stat.clone()
                self.tokens[name] = self.tokens.get(name, 0) + int(np.prod(x.shape[:-1]))
            return fn

        self._handles = [m.register_forward_hook(hook(n)) for n, m in self.linears.items()]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._memo = (None, None)


def input_sq_norms(model: "torch.nn.Module", blocks: Any, linears: dict[str, "torch.nn.Module"],
                   batches: Iterable["torch.Tensor"], check_cancel: Callable[[], None]) -> dict[str, "torch.Tensor"]:
    """Σ over calibration tokens of x² per input feature of each given Linear, in one dense pass."""
    import torch

    def stop(_m: Any, _i: Any, _o: Any) -> None:
        raise _Stop()

    stats = InputStats(linears, "sq")
    handle = blocks[len(blocks) - 1].register_forward_hook(stop)
    try:
        with stats, torch.no_grad():
            for ids in batches:
                check_cancel()
                _run_stopped(model, ids)
    finally:
        handle.remove()
    return stats.acc
