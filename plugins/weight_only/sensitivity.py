"""Which layers lose most at low bits, measured on the calibration windows.

A layer's sensitivity is the relative error its quantized weight adds to its own output on the
calibration text: ``Σ_k E[x_k²] ‖ΔW_k‖² / Σ_k E[x_k²] ‖W_k‖²`` with ``x`` the layer's input
activations (per input channel, so outlier channels of LLM activations weigh as they do in the
model) — the diagonal approximation of ‖XΔW‖² / ‖XW‖². One pass of the float model gives every
layer's input statistics; no per-layer re-run is needed. The ranking only orders the search: the
number of layers kept at 8 bits is then chosen by the measured perplexity.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from slimline.core.lm.text import TextWindows
from slimline.plugins.weight_only.graph import LMGraph
from slimline.plugins.weight_only.lm import LMRunner, LMSignature, lm_feeds
from slimline.plugins.weight_only.quant import QuantLayer


def input_power(lmg: LMGraph, sig: LMSignature, windows: TextWindows, *, threads: int | None,
                session_source: Callable[[Any], Any], cancel: Any = None) -> dict[str, np.ndarray]:
    """Mean squared activation per input channel of every linear layer's input, over ``windows``."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.ModelProto()
    model.CopyFrom(lmg.model)
    wanted = sorted({lin.input for lin in lmg.linears})
    have = {o.name for o in model.graph.output}
    for name in wanted:
        if name not in have:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    runner = LMRunner(session_source(model), sig, threads=threads)
    del model
    names = [o.name for o in runner.session.get_outputs()]
    idx = {n: names.index(n) for n in wanted}
    sums: dict[str, np.ndarray] = {}
    count = 0
    for i in range(windows.count):
        if cancel is not None:
            cancel.raise_if_cancelled()
        feeds = lm_feeds(sig, np.asarray(windows.ids[i:i + 1], dtype=np.int64))
        outs = runner.session.run(None, feeds)
        for n in wanted:
            x = np.asarray(outs[idx[n]], dtype=np.float64)
            x = x.reshape(-1, x.shape[-1])
            sums[n] = sums.get(n, 0.0) + (x * x).sum(axis=0)
        count += int(windows.ids.shape[1])
    return {n: s / max(count, 1) for n, s in sums.items()}


def relative_error(w: np.ndarray, q: QuantLayer, power: np.ndarray | None) -> float:
    """‖XΔW‖² / ‖XW‖² under the diagonal approximation (plain weight error when ``power`` is None)."""
    d = q.dequantize() - w
    p = np.ones(w.shape[0]) if power is None or power.shape[0] != w.shape[0] else power
    num = float(np.dot(p, np.square(d, dtype=np.float64).sum(axis=1)))
    den = float(np.dot(p, np.square(w, dtype=np.float64).sum(axis=1)))
    return num / den if den > 0 else 0.0
