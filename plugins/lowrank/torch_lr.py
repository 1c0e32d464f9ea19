"""Low-rank factorization of torch Linear and Conv2d layers.

Linear(n→m) becomes Sequential(Linear(n→r, no bias), Linear(r→m)).
Conv2d(cin→cout, k×k) becomes Sequential(Conv2d(cin→r, k×k, same stride/padding/
dilation, no bias), Conv2d(r→cout, 1×1)), from the SVD of the weight reshaped to
[cout, cin·k·k]. Both are standard layers, so the Slimline archive reloads them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from slimline.plugins.lowrank.svd import Factorization, RankRule, factorize

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass
class Target:
    name: str
    op: str
    module: Any
    rule: RankRule


def find_targets(module: "torch.nn.Module", *, include_conv: bool, skip: list[str],
                 rule_for: Callable[[str], RankRule]) -> tuple[list[Target], dict[str, tuple[str, str]]]:
    """Layers to factorize, plus (op, reason) for those left alone."""
    import torch.nn as nn

    from slimline.plugins.prune.common import matches_any

    targets: list[Target] = []
    skipped: dict[str, tuple[str, str]] = {}
    for name, mod in module.named_modules():
        if isinstance(mod, nn.Linear):
            op = "Linear"
        elif isinstance(mod, nn.Conv2d):
            op = "Conv2d"
            if not include_conv:
                skipped[name] = (op, "Conv layers not included (include_conv is off)")
                continue
            if mod.groups != 1:
                skipped[name] = (op, f"grouped conv (groups={mod.groups})")
                continue
        else:
            continue
        if matches_any(name, skip):
            skipped[name] = (op, "in skip list")
            continue
        targets.append(Target(name, op, mod, rule_for(name)))
    return targets, skipped


def weight_matrix(t: Target) -> np.ndarray:
    w = t.module.weight.detach().cpu().float().numpy()
    return w.reshape(w.shape[0], -1)


def input_rms(module: "torch.nn.Module", targets: list[Target], batches: Any,
              check_cancel: Callable[[], None]) -> dict[str, np.ndarray]:
    """Per-input-feature RMS of each target's input (Linear: last dim; Conv: per channel, tiled k·k)."""
    import torch

    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str, op: str) -> Any:
        def fn(_m: Any, inp: Any, _out: Any) -> None:
            x = inp[0].detach().float()
            if op == "Conv2d":
                sq, n = (x ** 2).sum(dim=(0, 2, 3)), x.shape[0] * x.shape[2] * x.shape[3]
            else:
                x2 = x.reshape(-1, x.shape[-1])
                sq, n = (x2 ** 2).sum(dim=0), x2.shape[0]
            sums[name] = sums.get(name, 0) + sq
            counts[name] = counts.get(name, 0) + n
        return fn

    hooks = [t.module.register_forward_hook(hook(t.name, t.op)) for t in targets]
    try:
        with torch.no_grad():
            for feeds in batches:
                check_cancel()
                from slimline.plugins.prune.common import forward

                forward(module, feeds)
    finally:
        for h in hooks:
            h.remove()
    out: dict[str, np.ndarray] = {}
    for t in targets:
        if t.name not in sums:
            continue
        rms = torch.sqrt(sums[t.name] / max(1, counts[t.name])).cpu().numpy()
        if t.op == "Conv2d":
            kk = int(np.prod(t.module.kernel_size))
            rms = np.repeat(rms, kk)
        out[t.name] = rms
    return out


def build_replacement(t: Target, f: Factorization) -> "torch.nn.Module":
    """The two-layer replacement with the factor weights loaded."""
    import torch
    import torch.nn as nn

    mod = t.module
    dtype, device = mod.weight.dtype, mod.weight.device
    has_bias = mod.bias is not None
    assert f.first is not None and f.second is not None
    if t.op == "Linear":
        a = nn.Linear(mod.in_features, f.rank, bias=False)
        b = nn.Linear(f.rank, mod.out_features, bias=has_bias)
        a_w = torch.from_numpy(f.first)
        b_w = torch.from_numpy(f.second)
    else:
        a = nn.Conv2d(mod.in_channels, f.rank, mod.kernel_size, stride=mod.stride, padding=mod.padding,
                      dilation=mod.dilation, bias=False, padding_mode=mod.padding_mode)
        b = nn.Conv2d(f.rank, mod.out_channels, 1, bias=has_bias)
        a_w = torch.from_numpy(f.first).reshape(f.rank, mod.in_channels, *mod.kernel_size)
        b_w = torch.from_numpy(f.second).reshape(mod.out_channels, f.rank, 1, 1)
    with torch.no_grad():
        a.weight.copy_(a_w)
        b.weight.copy_(b_w)
        if has_bias:
            b.bias.copy_(mod.bias.detach())
    return nn.Sequential(a, b).to(device=device, dtype=dtype)


def set_submodule(root: "torch.nn.Module", path: str, new: "torch.nn.Module") -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def factor_target(t: Target, scale: np.ndarray | None) -> Factorization:
    return factorize(weight_matrix(t), t.rule, scale)
