"""Structured LLM pruning: whole decoder blocks, attention heads and MLP channels, physically removed.

Every change keeps the model describable by its own config (the same number of heads and
channels in every block), so the result is an ordinary HF model: config.json with the new
``num_hidden_layers`` / ``num_attention_heads`` / ``num_key_value_heads`` / ``intermediate_size``
(``head_dim`` written explicitly) rebuilds it with ``from_pretrained`` or from a Slimline
archive, and exporters (the onnxruntime-genai builder) read the same numbers.

Why not Torch-Pruning here: its dependency graph never finishes on grouped-query attention
models with transformers 5 (it loops in ``get_all_groups``; Torch-Pruning issue #527;
reproduced on the 4-head/2-KV-head test Llama: still running after 100 s). Llama-family
blocks (q/k/v/o_proj, gate/up/down_proj) are regular enough to cut directly, GQA-aware:
query heads are removed within each KV group (``head_mode='query'``: the KV cache keeps
its size) or whole KV groups with their query heads (``'kv'``: the KV cache shrinks too).

Importance: ``activation`` (Wanda-style, structured): a channel's score is Σ_i |W_out[i, j]|·‖X_j‖
over the calibration tokens, where W_out is the projection that writes the channel back into
the residual stream (o_proj for a head's 'head_dim' columns, down_proj for an MLP channel);
``magnitude``: the same without ‖X_j‖.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from slimline.core.errors import StepFailed

if TYPE_CHECKING:  # pragma: no cover
    import torch

ATTN_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj")


# ----------------------------------------------------------------------------- blocks
def remove_blocks(model: "torch.nn.Module", drop: list[int]) -> None:
    """Delete decoder blocks ``drop`` and renumber the rest (KV-cache indices, config)."""
    import torch.nn as nn

    from slimline.plugins._shared.lm import decoder_blocks

    path, blocks = decoder_blocks(model)
    gone = set(drop)
    kept = nn.ModuleList([b for i, b in enumerate(blocks) if i not in gone])
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, kept)
    for i, block in enumerate(kept):
        sub: Any
        for sub in block.modules():
            if hasattr(sub, "layer_idx"):
                sub.layer_idx = i
    cfg: Any = model.config
    cfg.num_hidden_layers = len(kept)
    types = getattr(cfg, "layer_types", None)
    if isinstance(types, list) and len(types) == len(blocks):
        cfg.layer_types = [t for i, t in enumerate(types) if i not in gone]


def blocks_to_drop(influence: np.ndarray, count: int) -> list[int]:
    """The ``count`` blocks with the lowest influence (ties: the later block goes first)."""
    order = sorted(range(len(influence)), key=lambda i: (float(influence[i]), -i))
    return sorted(order[:count])


# ----------------------------------------------------------------------------- heads / channels
@dataclass
class WidthPlan:
    heads: int              # query heads before
    kv_heads: int
    head_dim: int
    channels: int           # MLP intermediate channels before
    new_heads: int
    new_kv_heads: int
    new_channels: int


def llama_parts(block: Any) -> tuple[Any, Any]:
    """(attention, mlp) of a Llama-family block, or a StepFailed naming what is missing."""
    attn = getattr(block, "self_attn", None)
    mlp = getattr(block, "mlp", None)
    ok_attn = attn is not None and all(hasattr(attn, n) for n in ATTN_NAMES)
    ok_mlp = mlp is not None and hasattr(mlp, "up_proj") and hasattr(mlp, "down_proj")
    if not (ok_attn and ok_mlp):
        raise StepFailed(f"heads/channels pruning needs Llama-family blocks (self_attn.q/k/v/o_proj, "
                         f"mlp.up_proj/down_proj); this model's blocks are {type(block).__name__}",
                         subject="method", hint="use method 'blocks' (block removal) or an unstructured method "
                                                "for this architecture")
    return attn, mlp


def plan_width(cfg: Any, head_ratio: float, mlp_ratio: float, head_mode: str, round_to: int) -> WidthPlan:
    """How many heads / KV heads / channels stay (the same in every block)."""
    heads = int(cfg.num_attention_heads)
    kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    channels = int(cfg.intermediate_size)
    group = heads // kv
    if head_mode == "kv":
        new_kv = max(1, kv - int(round(kv * head_ratio)))
        new_heads = new_kv * group
    else:
        new_kv = kv
        new_heads = max(1, group - int(round(group * head_ratio))) * kv
    keep_c = channels - int(round(channels * mlp_ratio))
    if round_to > 1:
        keep_c = max(round_to, int(round(keep_c / round_to)) * round_to)
    keep_c = max(1, min(channels, keep_c))
    return WidthPlan(heads, kv, head_dim, channels, new_heads, new_kv, keep_c)


def _sliced(lin: Any, rows: "torch.Tensor | None" = None, cols: "torch.Tensor | None" = None) -> Any:
    import torch
    import torch.nn as nn

    w = lin.weight.detach()
    b = lin.bias.detach() if lin.bias is not None else None
    if rows is not None:
        w = w[rows]
        b = b[rows] if b is not None else None
    if cols is not None:
        w = w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new


def _channel_scores(out_proj: Any, sq: "torch.Tensor | None") -> "torch.Tensor":
    """Σ_i |W[i, j]| (· ‖X_j‖ when activation statistics are given) per input column j."""
    import torch

    s = out_proj.weight.detach().abs().float().sum(dim=0)
    return s * torch.sqrt(sq.to(s.device)) if sq is not None else s


def _head_rows(head_ids: list[int], head_dim: int) -> "torch.Tensor":
    import torch

    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in head_ids])


def prune_block_width(block: Any, plan: WidthPlan, head_mode: str, sq_o: "torch.Tensor | None",
                      sq_down: "torch.Tensor | None") -> None:
    """Cut heads and MLP channels of one Llama-family block in place, as ``plan`` says."""
    import torch

    attn, mlp = llama_parts(block)
    hd, group = plan.head_dim, plan.heads // plan.kv_heads
    if plan.new_heads < plan.heads:
        head_score = _channel_scores(attn.o_proj, sq_o).reshape(plan.heads, hd).sum(dim=1)
        if head_mode == "kv":
            group_score = head_score.reshape(plan.kv_heads, group).sum(dim=1)
            keep_kv = sorted(torch.topk(group_score, plan.new_kv_heads).indices.tolist())
            keep_q = [g * group + j for g in keep_kv for j in range(group)]
        else:
            keep_kv = list(range(plan.kv_heads))
            per = plan.new_heads // plan.kv_heads
            keep_q = []
            for g in range(plan.kv_heads):  # query heads stay next to their KV head (repeat_kv order)
                top = torch.topk(head_score[g * group:(g + 1) * group], per).indices.tolist()
                keep_q += [g * group + j for j in sorted(top)]
        q_rows, kv_rows = _head_rows(keep_q, hd), _head_rows(keep_kv, hd)
        attn.q_proj = _sliced(attn.q_proj, rows=q_rows)
        attn.k_proj = _sliced(attn.k_proj, rows=kv_rows)
        attn.v_proj = _sliced(attn.v_proj, rows=kv_rows)
        attn.o_proj = _sliced(attn.o_proj, cols=q_rows)
        attn.num_key_value_groups = plan.new_heads // plan.new_kv_heads
        for name, value in (("num_heads", plan.new_heads), ("num_key_value_heads", plan.new_kv_heads)):
            if hasattr(attn, name):
                setattr(attn, name, value)
    if plan.new_channels < plan.channels:
        score = _channel_scores(mlp.down_proj, sq_down)
        keep = torch.sort(torch.topk(score, plan.new_channels).indices).values
        if hasattr(mlp, "gate_proj"):
            mlp.gate_proj = _sliced(mlp.gate_proj, rows=keep)
        mlp.up_proj = _sliced(mlp.up_proj, rows=keep)
        mlp.down_proj = _sliced(mlp.down_proj, cols=keep)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = plan.new_channels


def apply_width_config(cfg: Any, plan: WidthPlan) -> None:
    cfg.num_attention_heads = plan.new_heads
    cfg.num_key_value_heads = plan.new_kv_heads
    cfg.head_dim = plan.head_dim
    cfg.intermediate_size = plan.new_channels
