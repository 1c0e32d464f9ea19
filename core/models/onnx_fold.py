"""Fold ONNX ``Constant`` nodes into initializers, in the main graph and in every If/Loop/Scan body.

Why: paddle2onnx (and some tf2onnx / older torch exports) keep every weight in Constant nodes,
and onnxruntime's quantizers only look at initializers, so such a model "has nothing to quantize".
Turning each Constant node into an initializer of the same name (in the graph that held the node)
changes nothing a runtime sees: an initializer is available before the first node runs, so the node
order stays valid, and subgraph nodes that read the name from an outer scope still find it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from slimline.core.models.onnx_files import constant_value, is_constant_node

if TYPE_CHECKING:  # pragma: no cover
    import onnx


def _fold_graph(graph: "onnx.GraphProto", protected: set[str], as_inputs: bool) -> int:
    """Fold this graph's Constant nodes (then recurse into subgraphs); returns how many were folded."""
    import onnx
    from onnx import helper

    folded = 0
    keep: list[onnx.NodeProto] = []
    outputs = {o.name for o in graph.output}
    taken = {t.name for t in graph.initializer}
    for node in graph.node:
        if is_constant_node(node) and len(node.output) == 1 and node.output[0] not in outputs | protected | taken:
            found = constant_value(node)
            if found is not None:
                t = onnx.TensorProto()
                t.CopyFrom(found[0])
                t.name = node.output[0]
                graph.initializer.append(t)
                if as_inputs:  # IR < 4: main-graph initializers must also be graph inputs (never in bodies)
                    graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
                taken.add(t.name)
                folded += 1
                continue
        keep.append(node)
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                folded += _fold_graph(a.g, protected, False)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sub in a.graphs:
                    folded += _fold_graph(sub, protected, False)
    return folded


def fold_constants_to_initializers(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """A copy of ``model`` whose Constant nodes (tensor, sparse and value_float(s)/value_int(s)) are initializers.

    The input is not changed. Constant nodes that produce a graph output, or a string, stay nodes
    (an output must be computed by a node in some runtimes). Run this before any onnxruntime
    quantizer so that weights stored as Constant nodes are found and quantized.
    """
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    protected = {o.name for o in out.graph.output}
    _fold_graph(out.graph, protected, as_inputs=out.ir_version < 4)
    return out


def count_constant_nodes(model: "onnx.ModelProto") -> int:
    """Constant nodes anywhere in the model (0 after folding, apart from graph outputs and strings)."""
    from slimline.core.models.onnx_files import iter_graphs

    return sum(1 for g in iter_graphs(model.graph) for n in g.node if is_constant_node(n))
