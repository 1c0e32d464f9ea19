"""Activation smoothing (SmoothQuant): move activation outliers into the weights before quantizing.

With ``accuracy_level`` 4 MatMulNBits rounds each input row to int8 in blocks; LLM activations
carry a few huge channels that set every block's scale and wash out the rest (on SmolLM2-135M,
int8 activations cost +1.4 % perplexity over 8-bit weights alone). Dividing input channel k by
``s_k = max|x_k|^α / max|W_k|^(1-α)`` and multiplying weight row k by ``s_k`` computes the same
function in float and evens the channels out. The division is folded into the producer of the
input, so the graph gains no node:
  * a norm (SimplifiedLayerNormalization / SkipSimplifiedLayerNormalization / LayerNormalization /
    SkipLayerNormalization, or a ``Mul`` by a constant vector that ends a decomposed RMSNorm): its
    scale (and bias) divided by ``s``;
  * ``Mul(act(gate), up)`` feeding the MLP's down projection: the up projection's columns divided by ``s``.
An input is smoothed only when every reader of it is a layer being quantized and no weight involved is
shared (a tied LM head's weight is the embedding table: it is left alone).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from slimline.plugins.weight_only.graph import LMGraph

_NORMS = {"SimplifiedLayerNormalization": (1, None), "LayerNormalization": (1, 2),
          "SkipSimplifiedLayerNormalization": (2, None), "SkipLayerNormalization": (2, 3)}


@dataclass(frozen=True)
class Smoothing:
    """One smoothed layer input: the layers that read it and where the division went."""

    input: str
    layers: tuple[str, ...]
    folded_into: str


def smooth(lmg: LMGraph, targets: set[str], max_abs: dict[str, np.ndarray], alpha: float) -> list[Smoothing]:
    """Smooth every eligible input of the ``targets`` layers in place (weights of ``lmg.model``)."""
    from onnx import numpy_helper

    graph = lmg.model.graph
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, list[Any]] = {}
    for n in graph.node:
        for x in n.input:
            readers.setdefault(x, []).append(n)
    producers = {o: n for n in graph.node for o in n.output}
    by_node = {lin.node: lin for lin in lmg.linears}
    emb = lmg.embedding
    shared = {emb.table, f"{emb.table}.T"} if emb is not None else set()   # the embedding table, tied or not
    done: list[Smoothing] = []

    def get(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name]).astype(np.float32)

    def put(name: str, value: np.ndarray) -> None:
        t = numpy_helper.from_array(value.astype(numpy_helper.to_array(inits[name]).dtype), name)
        inits[name].CopyFrom(t)

    for x in sorted({by_node[t].input for t in targets if t in by_node}):
        users = readers.get(x, [])
        lins = [by_node.get(u.name) for u in users]
        if not users or any(lin is None or lin.node not in targets for lin in lins) or x not in max_abs:
            continue
        weights = [lin.weight for lin in lins if lin is not None]
        if any(w in shared or len(readers.get(w, [])) != 1 for w in weights):
            continue
        fold = _fold_target(producers.get(x), x, inits, readers, by_node, targets)
        if fold is None:
            continue
        kind, names = fold
        ws = [get(w) for w in weights]
        w_max = np.max(np.stack([np.abs(w).max(axis=1) for w in ws]), axis=0)
        a_max = np.asarray(max_abs[x], dtype=np.float64)
        if a_max.shape[0] != w_max.shape[0]:
            continue
        s = np.power(np.maximum(a_max, 1e-5), alpha) / np.power(np.maximum(w_max, 1e-5), 1 - alpha)
        s = np.clip(s, 1e-4, 1e4)
        for w_name, w in zip(weights, ws):
            put(w_name, w * s[:, None])
        if kind == "vector":
            for name in names:
                put(name, get(name) / s)
        else:  # the producing MatMul's columns
            put(names[0], get(names[0]) / s[None, :])
        done.append(Smoothing(input=x, layers=tuple(lin.node for lin in lins if lin is not None),
                              folded_into=", ".join(names)))
    return done


def _fold_target(producer: Any, x: str, inits: dict[str, Any], readers: dict[str, list[Any]],
                 by_node: dict[str, Any], targets: set[str]) -> tuple[str, list[str]] | None:
    """("vector", [scale (, bias)]) or ("columns", [weight]) that can absorb a per-channel division of ``x``."""
    if producer is None:
        return None
    if producer.op_type in _NORMS and producer.output[0] == x:
        gamma_at, beta_at = _NORMS[producer.op_type]
        names = [producer.input[i] for i in (gamma_at, beta_at) if i is not None and len(producer.input) > i
                 and producer.input[i]]
        if names and all(n in inits and len(readers.get(n, [])) == 1 for n in names):
            return "vector", names
        return None
    if producer.op_type == "Mul":
        a, b = producer.input[0], producer.input[1]
        for vec in (a, b):  # the end of a decomposed RMSNorm: Mul(x̂, γ)
            if vec in inits and len(inits[vec].dims) == 1 and len(readers.get(vec, [])) == 1:
                return "vector", [vec]
        for side in (a, b):  # Mul(act(gate), up): divide the up projection's output columns
            src = next((lin for lin in by_node.values() if lin.output == side), None)
            if src is not None and src.node in targets and len(readers.get(side, [])) == 1 \
                    and len(readers.get(src.weight, [])) == 1:
                return "columns", [src.weight]
    return None
