"""Low-rank factorization of ONNX MatMul/Gemm nodes whose weight is a constant.

MatMul(X, W[K,N])            → MatMul(MatMul(X, A[K,r]), B[r,N])
Gemm(X, W, C, transB, α, β)  → Gemm(MatMul(X, A[K,r]), B[r,N], C, α, β, transB=0)
Weights are factored in the torch layout [out, in] so rank rules match the torch path.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from slimline.plugins._shared.layers import matches_any
from slimline.plugins._shared.onnxio import initializer_map, node_attr
from slimline.plugins.lowrank.svd import Factorization, RankRule


@dataclass
class OnnxTarget:
    index: int
    node: Any
    name: str              # node name, else the weight's name
    weight_name: str
    op: str
    matrix: np.ndarray     # [out, in]
    rule: RankRule


def find_targets(proto: Any, *, skip: list[str], rule_for: Callable[[str], RankRule]
                 ) -> tuple[list[OnnxTarget], dict[str, tuple[str, str]]]:
    from onnx import numpy_helper

    inits = initializer_map(proto)
    targets: list[OnnxTarget] = []
    skipped: dict[str, tuple[str, str]] = {}
    for i, node in enumerate(proto.graph.node):
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        wname = node.input[1]
        name = node.name or wname
        if node.input[0] in inits:
            skipped[name] = (node.op_type, "both inputs are constants")
            continue
        if len(inits[wname].dims) != 2:
            skipped[name] = (node.op_type, f"weight has {len(inits[wname].dims)} dims (batched MatMul)")
            continue
        if node.op_type == "Gemm" and node_attr(node, "transA", 0):
            skipped[name] = (node.op_type, "Gemm with transA=1")
            continue
        if matches_any(name, skip) or matches_any(wname, skip):
            skipped[name] = (node.op_type, "in skip list")
            continue
        w = numpy_helper.to_array(inits[wname])
        if w.dtype.kind != "f":
            skipped[name] = (node.op_type, f"{w.dtype} weight (already quantized?)")
            continue
        transposed = node.op_type == "Gemm" and node_attr(node, "transB", 0)
        matrix = np.array(w if transposed else w.T)
        targets.append(OnnxTarget(i, node, name, wname, node.op_type, matrix, rule_for(name)))
    return targets, skipped


def input_stats(proto: Any, targets: list[OnnxTarget], batches: Any, check_cancel: Callable[[], None],
                *, method: str = "whiten", gram_limit: int = 8192) -> dict[str, dict[str, np.ndarray]]:
    """XᵀX/N (or per-feature RMS) of each target's activation input, run through onnxruntime."""
    import onnx

    from slimline.core.runtime import ort_inference_session

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph_inputs = {i.name for i in model.graph.input}
    existing = {o.name for o in model.graph.output}
    wanted = sorted({t.node.input[0] for t in targets})
    for name in wanted:
        if name not in existing and name not in graph_inputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = ort_inference_session(model.SerializeToString())
    out_names = [o.name for o in sess.get_outputs()]
    width = {t.node.input[0]: t.matrix.shape[1] for t in targets}
    full = {name: method == "whiten" and width[name] <= gram_limit for name in wanted}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for feeds in batches:
        check_cancel()
        feeds = {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in feeds.items()}
        results = dict(zip(out_names, sess.run(None, feeds)))
        results.update({k: v for k, v in feeds.items() if k in graph_inputs})
        for name in wanted:
            x = np.asarray(results[name], dtype=np.float64)
            x = x.reshape(-1, x.shape[-1])
            stat = x.T @ x if full[name] else (x ** 2).sum(axis=0)
            sums[name] = sums[name] + stat if name in sums else stat
            counts[name] = counts.get(name, 0) + x.shape[0]
    out: dict[str, dict[str, np.ndarray]] = {}
    for t in targets:
        name = t.node.input[0]
        if name in sums:
            mean = sums[name] / max(1, counts[name])
            out[t.name] = {"gram": mean} if full[name] else {"rms": np.sqrt(mean)}
    return out


def rewrite(proto: Any, done: list[tuple[OnnxTarget, Factorization]]) -> None:
    """Replace each factored node by two nodes; drop weights no other node reads."""
    import onnx
    from onnx import helper, numpy_helper

    by_index = {t.index: (t, f) for t, f in done}
    new_nodes = []
    used_names = {init.name for init in proto.graph.initializer} | {n.name for n in proto.graph.node}

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in used_names:
            name, k = f"{base}_{k}", k + 1
        used_names.add(name)
        return name

    for i, node in enumerate(proto.graph.node):
        if i not in by_index:
            new_nodes.append(node)
            continue
        t, f = by_index[i]
        assert f.first is not None and f.second is not None
        dtype = numpy_helper.to_array(next(x for x in proto.graph.initializer if x.name == t.weight_name)).dtype
        a_name, b_name = fresh(f"{t.weight_name}_lr_a"), fresh(f"{t.weight_name}_lr_b")
        hidden = fresh(f"{t.name}_lr_hidden")
        proto.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(f.first.T.astype(dtype)), a_name))
        proto.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(f.second.T.astype(dtype)), b_name))
        new_nodes.append(helper.make_node("MatMul", [node.input[0], a_name], [hidden], name=fresh(f"{t.name}_lr_1")))
        if t.op == "MatMul":
            new_nodes.append(helper.make_node("MatMul", [hidden, b_name], list(node.output),
                                              name=fresh(f"{t.name}_lr_2")))
        else:
            inputs = [hidden, b_name] + list(node.input[2:])
            new_nodes.append(helper.make_node(
                "Gemm", inputs, list(node.output), name=fresh(f"{t.name}_lr_2"),
                alpha=float(node_attr(node, "alpha", 1.0)), beta=float(node_attr(node, "beta", 1.0)), transB=0))
    del proto.graph.node[:]
    proto.graph.node.extend(new_nodes)
    still_used = {x for n in proto.graph.node for x in n.input} | {o.name for o in proto.graph.output}
    keep = [init for init in proto.graph.initializer if init.name in still_used]
    dropped = {init.name for init in proto.graph.initializer} - {k.name for k in keep}
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    # old exporters also list initializers as graph inputs: drop those of removed weights
    inputs = [i for i in proto.graph.input if i.name not in dropped]
    del proto.graph.input[:]
    proto.graph.input.extend(inputs)
    if proto.ByteSize() < 1_800_000_000:
        onnx.checker.check_model(proto)
