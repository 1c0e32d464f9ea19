"""Small hand-built ONNX models with a known most-sensitive layer, for sensitivity and search tests.

A 4-layer MLP (MatMul + Relu) whose second layer holds one weight 60× larger than the rest: per-tensor
INT8 rounds that layer's other weights to zero, so it is the layer quantization hurts. The outlier reads an
input the first layer keeps tiny, so the activations stay ordinary (no other layer's input quantization
suffers). Its first layer is a narrow 16→8 bottleneck, the one pruning hurts most. Labels are the float
model's own predictions.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from slimline.core.handle import ModelHandle, TensorSpec

SIZES = [(16, 8), (8, 48), (48, 48), (48, 6)]
NODES = ["fc1", "fc2", "fc3", "fc4"]
OUTLIER_LAYER = "fc2"


def weights(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    ws = [(rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32) for s in SIZES]
    ws[0][:, 3] *= 1e-3
    ws[1][3, 5] = 60.0 * float(np.abs(ws[1]).max())
    return ws


def forward(ws: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    h = x
    for i, w in enumerate(ws):
        h = h @ w
        if i < len(ws) - 1:
            h = np.maximum(h, 0.0)
    return h


def save_mlp(folder: Path, seed: int = 0, rows: int = 96) -> tuple[ModelHandle, Path]:
    """The model (ONNX) and an eval .npz (x, labels) beside it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    ws = weights(seed)
    nodes, inits, prev = [], [], "x"
    for i, (name, w) in enumerate(zip(NODES, ws)):
        inits.append(numpy_helper.from_array(w, f"{name}.weight"))
        out = "logits" if i == len(ws) - 1 else f"{name}_out"
        nodes.append(helper.make_node("MatMul", [prev, f"{name}.weight"], [out], name=name))
        prev = out
        if i < len(ws) - 1:
            nodes.append(helper.make_node("Relu", [out], [f"{name}_relu"], name=f"{name}_act"))
            prev = f"{name}_relu"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="slimline-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mlp.onnx"
    onnx.save(model, str(path))
    x = np.random.default_rng(seed + 1).standard_normal((rows, 16)).astype(np.float32)
    data = folder / "eval.npz"
    np.savez(data, x=x, labels=forward(ws, x).argmax(1).astype(np.int64))
    handle = ModelHandle(path=str(path), format="onnx", family="onnx", files=[str(path)],
                         inputs=[TensorSpec(name="x", shape=["batch", 16])],
                         outputs=[TensorSpec(name="logits", shape=["batch", 6])], bytes_on_disk=path.stat().st_size,
                         meta={"task": "classification"})
    return handle, data
