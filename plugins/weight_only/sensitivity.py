"""Which layers lose most when quantized, measured on the calibration windows.

Two kinds of loss, each as the relative error a layer adds to its own output on the calibration
text, under the diagonal approximation of ‖ΔY‖² / ‖Y‖² (per input channel, so the outlier
channels of LLM activations weigh as they do in the model):
  * weights at low bits: ``Σ_k E[x_k²] ‖ΔW_k‖² / Σ_k E[x_k²] ‖W_k‖²``;
  * activations rounded to int8 by the kernel (MatMulNBits ``accuracy_level`` 4 quantizes each row of
    the input in blocks of ``block_size``, symmetric, scale = block max / 127):
    ``Σ_k E[Δx_k²] ‖W_k‖² / Σ_k E[x_k²] ‖W_k‖²``.
One pass of the float model gives every layer's input statistics; no per-layer re-run is needed.
The rankings only order the search: how many layers are spared is chosen by measured perplexity.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from slimline.core.lm.onnx_lm import LMSignature, OnnxLM, lm_feeds
from slimline.core.lm.text import TextWindows
from slimline.plugins.weight_only.graph import LMGraph
from slimline.plugins.weight_only.quant import QuantLayer


@dataclass
class InputStats:
    """Per input channel of one layer input: mean x² and mean squared int8-rounding error of x."""

    power: np.ndarray
    int8_error: np.ndarray
    max_abs: np.ndarray


def int8_rounding_error(x: np.ndarray, block: int) -> np.ndarray:
    """Squared error per element of rounding ``x`` [rows, K] to int8 in blocks of ``block`` along K."""
    rows, k = x.shape
    pad = (-k) % block
    xp = np.pad(x, ((0, 0), (0, pad))) if pad else x
    blocks = xp.reshape(rows, -1, block)
    scale = np.abs(blocks).max(axis=-1, keepdims=True) / 127.0
    safe = np.where(scale > 0, scale, 1.0)
    err = (np.round(blocks / safe).clip(-127, 127) * safe - blocks) ** 2
    return err.reshape(rows, -1)[:, :k]


def input_stats(lmg: LMGraph, sig: LMSignature, windows: TextWindows, *, threads: int | None, block: int,
                session_source: Callable[[Any], Any], cancel: Any = None) -> dict[str, InputStats]:
    """Statistics of every linear layer's input over ``windows`` (one run of the float model)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.ModelProto()
    model.CopyFrom(lmg.model)
    wanted = sorted({lin.input for lin in lmg.linears})
    have = {o.name for o in model.graph.output}
    for name in wanted:
        if name not in have:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    runner = OnnxLM(session_source(model), sig, threads=threads)
    del model
    names = [o.name for o in runner.session.get_outputs()]
    idx = {n: names.index(n) for n in wanted}
    power: dict[str, np.ndarray] = {}
    error: dict[str, np.ndarray] = {}
    peak: dict[str, np.ndarray] = {}
    count = 0
    for i in range(windows.count):
        if cancel is not None:
            cancel.raise_if_cancelled()
        outs = runner.session.run(None, lm_feeds(sig, np.asarray(windows.ids[i:i + 1], dtype=np.int64)))
        for n in wanted:
            x = np.asarray(outs[idx[n]], dtype=np.float64)
            x = x.reshape(-1, x.shape[-1])
            power[n] = power.get(n, 0.0) + (x * x).sum(axis=0)
            error[n] = error.get(n, 0.0) + int8_rounding_error(x, block).sum(axis=0)
            peak[n] = np.maximum(peak.get(n, 0.0), np.abs(x).max(axis=0))
        count += int(windows.ids.shape[1])
    return {n: InputStats(power=power[n] / max(count, 1), int8_error=error[n] / max(count, 1), max_abs=peak[n])
            for n in wanted}


def relative_error(w: np.ndarray, q: QuantLayer, power: np.ndarray | None) -> float:
    """‖XΔW‖² / ‖XW‖² under the diagonal approximation (plain weight error when ``power`` is None)."""
    d = q.dequantize() - w
    p = np.ones(w.shape[0]) if power is None or power.shape[0] != w.shape[0] else power
    num = float(np.dot(p, np.square(d, dtype=np.float64).sum(axis=1)))
    den = float(np.dot(p, np.square(w, dtype=np.float64).sum(axis=1)))
    return num / den if den > 0 else 0.0


def activation_error(w: np.ndarray, stats: InputStats) -> float:
    """‖ΔX W‖² / ‖X W‖² of int8-rounded inputs, under the diagonal approximation."""
    rows = np.square(w, dtype=np.float64).sum(axis=1)
    den = float(np.dot(stats.power, rows))
    return float(np.dot(stats.int8_error, rows)) / den if den > 0 else 0.0
