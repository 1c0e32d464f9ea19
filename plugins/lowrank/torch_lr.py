"""Low-rank factorization of torch Linear and Conv2d layers.

Linear(n→m) becomes Sequential(Linear(n→r, no bias), Linear(r→m)).
Conv2d(cin→cout, k×k) becomes Sequential(Conv2d(cin→r, k×k, same stride/padding/
dilation, no bias), Conv2d(r→cout, 1×1)), from the SVD of the weight reshaped to
[cout, cin·k·k]. Both are standard layers, so the Slimline archive reloads them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from slimline.plugins._shared.common import forward
from slimline.plugins._shared.layers import matches_any
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


GRAM_LIMIT = 8192  # inputs wider than this use the diagonal (RMS) statistics only


def input_stats(module: "torch.nn.Module", targets: list[Target], batches: Any,
                check_cancel: Callable[[], None], *, method: str = "whiten") -> dict[str, dict[str, np.ndarray]]:
    """Per target: ``{"gram": XᵀX/N}`` (method "whiten", inputs ≤ GRAM_LIMIT wide) or ``{"rms": ...}``.

    X rows are what the weight matrix multiplies: Linear inputs over all leading dims;
    Conv2d input patches (``unfold``, ordered like ``weight.reshape(cout, -1)``).
    """
    import torch
    import torch.nn.functional as F

    acc: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    full = {t.name: method == "whiten" and weight_matrix_cols(t) <= GRAM_LIMIT for t in targets}

    def hook(t: Target) -> Any:
        def fn(_m: Any, inp: Any, _out: Any) -> None:
            x = inp[0].detach().float()
            if t.op == "Conv2d":
                mod = t.module
                if full[t.name]:
                    cols = F.unfold(x, mod.kernel_size, dilation=mod.dilation, padding=mod.padding, stride=mod.stride)
                    x2 = cols.transpose(1, 2).reshape(-1, cols.shape[1])
                else:
                    x2 = x.transpose(0, 1).reshape(x.shape[1], -1).T  # per-channel values
            else:
                x2 = x.reshape(-1, x.shape[-1])
            stat = x2.T @ x2 if full[t.name] else (x2 ** 2).sum(dim=0)
            acc[t.name] = acc[t.name] + stat if t.name in acc else stat
            counts[t.name] = counts.get(t.name, 0) + x2.shape[0]
        return fn

    hooks = [t.module.register_forward_hook(hook(t)) for t in targets]
    try:
        with torch.no_grad():
            for feeds in batches:
                check_cancel()
                forward(module, feeds)
    finally:
        for h in hooks:
            h.remove()
    out: dict[str, dict[str, np.ndarray]] = {}
    for t in targets:
        if t.name not in acc:
            continue
        mean = (acc[t.name] / max(1, counts[t.name])).double().cpu().numpy()
        if full[t.name]:
            out[t.name] = {"gram": mean}
            continue
        rms = np.sqrt(mean)
        if t.op == "Conv2d":
            rms = np.repeat(rms, int(np.prod(t.module.kernel_size)))
        out[t.name] = {"rms": rms}
    return out


def weight_matrix_cols(t: Target) -> int:
    return int(np.prod(t.module.weight.shape[1:]))


def build_replacement(t: Target, f: Factorization) -> "torch.nn.Module":
    """The two-layer replacement with the factor weights loaded."""
    import torch
    import torch.nn as nn

    mod = t.module
    dtype, device = mod.weight.dtype, mod.weight.device
    has_bias = mod.bias is not None
    assert f.first is not None and f.second is not None
    if t.op == "Linear":
        a: nn.Module = nn.Linear(mod.in_features, f.rank, bias=False)
        b: nn.Module = nn.Linear(f.rank, mod.out_features, bias=has_bias)
        a_w = torch.from_numpy(f.first)
        b_w = torch.from_numpy(f.second)
    else:
        a = nn.Conv2d(mod.in_channels, f.rank, mod.kernel_size, stride=mod.stride, padding=mod.padding,
                      dilation=mod.dilation, bias=False, padding_mode=mod.padding_mode)
        b = nn.Conv2d(f.rank, mod.out_channels, 1, bias=has_bias)
        a_w = torch.from_numpy(f.first).reshape(f.rank, mod.in_channels, *mod.kernel_size)
        b_w = torch.from_numpy(f.second).reshape(mod.out_channels, f.rank, 1, 1)
    with torch.no_grad():
        a.get_parameter("weight").copy_(a_w)
        b.get_parameter("weight").copy_(b_w)
        if has_bias:
            b.get_parameter("bias").copy_(mod.bias.detach())
    return nn.Sequential(a, b).to(device=device, dtype=dtype)


def set_submodule(root: "torch.nn.Module", path: str, new: "torch.nn.Module") -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def factor_target(t: Target, stats: dict[str, np.ndarray] | None) -> Factorization:
    stats = stats or {}
    return factorize(weight_matrix(t), t.rule, scale=stats.get("rms"), gram=stats.get("gram"))
