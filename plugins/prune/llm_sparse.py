"""Unstructured and N:M pruning of an LM's decoder Linear layers: magnitude, Wanda, SparseGPT.

- magnitude: drop the smallest |W| per layer (the baseline; collapses LLMs at 50 %, because
  a few input features carry activations 100× the others and their small weights matter).
- Wanda (Sun et al. 2023): score |W_ij|·‖X_j‖₂ with ‖X_j‖ the norm of input feature j over
  the calibration tokens; drop the lowest scores in each output row. No weight update.
- SparseGPT (Frantar & Alistarh 2023): optimal-brain-surgeon pruning column by column with
  the inverse Hessian H⁻¹ of the layer's reconstruction error (H = XᵀX/N + damping); each
  pruned weight's error is pushed onto the not-yet-processed columns of its row. Masks are
  chosen per block of 128 columns by w²/[H⁻¹]²_jj (adaptive mask selection); N:M groups by
  the same score.
Masks come from :mod:`.sparsity` (the same exact-count rules as builtin.prune_magnitude).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from slimline.core.errors import StepFailed
from slimline.plugins._shared.layers import matches_any
from slimline.plugins.prune import llm_calib
from slimline.plugins.prune.sparsity import WeightSlot, nm_masks, row_masks, unstructured_masks

if TYPE_CHECKING:  # pragma: no cover
    import torch

SPARSEGPT_BLOCK = 128


@dataclass
class SparseSpec:
    method: str            # "magnitude" | "wanda" | "sparsegpt"
    sparsity: float
    pattern: str           # "unstructured" | "n:m"
    n: int
    m: int
    skip: list[str]
    damp: float = 0.01
    sequential: bool = True


@dataclass
class LayerRow:
    layer: str
    shape: list[int]
    sparsity: float
    status: str
    reason: str = ""


def block_linears(blocks: Any, path: str, index: int, skip: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Linear layers of block ``index`` by full name, and the skipped ones with the reason."""
    import torch.nn as nn

    found: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, mod in blocks[index].named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        full = f"{path}.{index}.{name}"
        if matches_any(full, skip):
            skipped[full] = "in skip list"
        else:
            found[full] = mod
    return found, skipped


def _masks(spec: SparseSpec, slots: list[WeightSlot], scores: dict[str, np.ndarray] | None) -> Any:
    if spec.pattern == "n:m":
        return nm_masks(slots, n=spec.n, m=spec.m, criterion="l1", seed=0, scores=scores)
    if scores is None:
        return unstructured_masks(slots, sparsity=spec.sparsity, scope="layer", criterion="l1", seed=0)
    return row_masks(slots, sparsity=spec.sparsity, scores=scores)


def _apply_masks(linears: dict[str, Any], spec: SparseSpec, scores: dict[str, np.ndarray] | None,
                 rows: list[LayerRow]) -> None:
    import torch

    slots = [WeightSlot(n, "Linear", m.weight.detach().cpu().float().numpy(), 1) for n, m in linears.items()]
    res = _masks(spec, slots, scores)
    with torch.no_grad():
        for s in slots:
            w = linears[s.name].weight
            if s.name in res.keep:
                w.mul_(torch.from_numpy(res.keep[s.name]).to(device=w.device, dtype=w.dtype))
                rows.append(LayerRow(s.name, list(w.shape), float((w == 0).float().mean()), "pruned"))
            else:
                rows.append(LayerRow(s.name, list(w.shape), float((w == 0).float().mean()), "skipped",
                                     res.skipped.get(s.name, "")))


def sparsegpt_weight(w: "torch.Tensor", gram: "torch.Tensor", spec: SparseSpec) -> "torch.Tensor":
    """SparseGPT on one weight [out, in] with the input second moment ``gram`` [in, in]."""
    import torch

    W = w.detach().float().clone()
    H = gram.detach().float().clone()
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    eye = torch.eye(cols, dtype=H.dtype, device=H.device)
    damp = spec.damp * float(torch.mean(torch.diag(H)))
    for _ in range(6):
        try:
            chol = torch.linalg.cholesky(H + damp * eye)
            hinv = torch.linalg.cholesky(torch.cholesky_inverse(chol), upper=True)
            break
        except RuntimeError:  # torch.linalg.LinAlgError: not positive definite yet
            damp *= 10
    else:
        raise StepFailed("the layer's input Hessian is not positive definite even with damping",
                         subject="damp", hint="raise damp, or use more calibration windows")
    pruned = torch.zeros_like(W, dtype=torch.bool)
    for i1 in range(0, cols, SPARSEGPT_BLOCK):
        i2 = min(i1 + SPARSEGPT_BLOCK, cols)
        w1 = W[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        h1 = hinv[i1:i2, i1:i2]
        d1 = torch.diag(h1)
        mask1 = torch.zeros_like(w1, dtype=torch.bool)
        if spec.pattern != "n:m":
            score = w1 * w1 / (d1 * d1)[None, :]
            k = int(round(spec.sparsity * score.numel()))
            if k:
                idx = torch.topk(score.reshape(-1), k, largest=False).indices
                mask1.view(-1)[idx] = True
        for i in range(i2 - i1):
            if spec.pattern == "n:m" and i % spec.m == 0:
                grp = w1[:, i:i + spec.m]
                score = grp * grp / (d1[i:i + spec.m] ** 2)[None, :]
                drop = torch.topk(score, spec.m - spec.n, dim=1, largest=False).indices
                mask1.scatter_(1, i + drop, True)
            col = w1[:, i]
            q = col.masked_fill(mask1[:, i], 0.0)   # (boolean indexing would wait for the GPU at every column)
            q1[:, i] = q
            e = (col - q) / h1[i, i]
            w1[:, i:] -= e[:, None] @ h1[i, i:][None, :]
            err1[:, i] = e
        W[:, i1:i2] = q1
        pruned[:, i1:i2] = mask1
        W[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    W[pruned] = 0.0
    return W


def prune_decoder(model: "torch.nn.Module", ids: np.ndarray | None, spec: SparseSpec, *, batch_size: int,
                  device: str, check_cancel: Callable[[], None],
                  progress: Callable[[float, str], None]) -> tuple[list[LayerRow], dict[str, str]]:
    """Prune every decoder-block Linear of ``model`` in place; rows per layer and skipped layers."""
    import torch

    from slimline.plugins._shared.lm import decoder_blocks, id_batches

    path, blocks = decoder_blocks(model)
    rows: list[LayerRow] = []
    skipped: dict[str, str] = {}
    if spec.method == "magnitude":
        for i in range(len(blocks)):
            check_cancel()
            progress(i / len(blocks), f"block {i + 1}/{len(blocks)}")
            lins, sk = block_linears(blocks, path, i, spec.skip)
            skipped.update(sk)
            _apply_masks(lins, spec, None, rows)
        return rows, skipped
    if ids is None:
        raise StepFailed(f"{spec.method} needs calibration text", subject="data",
                         hint="pass a text file as --train-data (or --data)")
    progress(0.0, "running the calibration text to the first block")
    cap = llm_calib.capture(model, blocks, id_batches(ids, batch_size, device), check_cancel)
    hidden = cap.hidden
    kind = "gram" if spec.method == "sparsegpt" else "sq"
    for i, block in enumerate(blocks):
        check_cancel()
        progress(i / len(blocks), f"block {i + 1}/{len(blocks)}: {spec.method}")
        lins, sk = block_linears(blocks, path, i, spec.skip)
        skipped.update(sk)
        stats = llm_calib.InputStats(lins, kind)
        with stats, torch.no_grad():
            outs = [llm_calib.block_forward(block, h, cap.calls[b][i]) for b, h in enumerate(hidden)]
        if spec.method == "wanda":
            scores = {n: (m.weight.detach().abs().float() * torch.sqrt(stats.acc[n])[None, :]).cpu().numpy()
                      for n, m in lins.items()}
            _apply_masks(lins, spec, scores, rows)
        else:
            _sparsegpt_block(lins, stats, spec, rows, check_cancel)
        if spec.sequential:
            with torch.no_grad():
                outs = [llm_calib.block_forward(block, h, cap.calls[b][i]) for b, h in enumerate(hidden)]
        hidden = outs
    return rows, skipped


def _sparsegpt_block(lins: dict[str, Any], stats: llm_calib.InputStats, spec: SparseSpec, rows: list[LayerRow],
                     check_cancel: Callable[[], None]) -> None:
    import torch

    for name, mod in lins.items():
        check_cancel()
        w = mod.weight
        if spec.pattern == "n:m" and w.shape[1] % spec.m:
            rows.append(LayerRow(name, list(w.shape), float((w == 0).float().mean()), "skipped",
                                 f"input dim {w.shape[1]} is not a multiple of {spec.m}"))
            continue
        gram = stats.acc[name] / max(stats.tokens.get(name, 1), 1)
        new = sparsegpt_weight(w, gram, spec)
        with torch.no_grad():
            w.copy_(new.to(dtype=w.dtype, device=w.device))
        rows.append(LayerRow(name, list(w.shape), float((w == 0).float().mean()), "pruned"))
