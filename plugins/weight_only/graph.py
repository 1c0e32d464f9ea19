"""Where an ONNX LM keeps its weights, and how a quantized copy is put together from per-layer results.

The step sees a LM's graph as: linear layers (MatMul by a 2-D float weight), the token embedding
(Gather from a [vocab, hidden] table) and the LM head (the linear layer that makes the logits).
Exports differ in how they tie the embedding to the head: the genai builder gathers from
``Transpose(lm_head weight)``, torch's exporter multiplies by ``Transpose(embedding)``. Both are
brought to one form (the head's weight [hidden, vocab] as an initializer) before quantizing, and
a tied embedding then gathers from the head's packed 4/8-bit weight through GatherBlockQuantized,
so the shared matrix is stored once, quantized.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from slimline.plugins.weight_only.quant import QuantLayer

Role = Literal["linear", "lm_head"]
_BLOCK = re.compile(r"layers?[./_](\d+)[./_]|\bh[./](\d+)[./]|blocks?[./_](\d+)[./_]")


@dataclass(frozen=True)
class Linear:
    """One MatMul by a constant weight [K, N]."""

    node: str
    weight: str
    input: str
    output: str
    k: int
    n: int
    role: Role
    block: int | None

    @property
    def params(self) -> int:
        return self.k * self.n


@dataclass(frozen=True)
class Embedding:
    """The token-embedding Gather. ``tied``: its table is the LM head's weight (transposed)."""

    node: str
    table: str          # initializer the Gather reads (directly or through a Transpose); [V, H] or, tied, [H, V]
    transposed: bool    # the table is stored [H, V] and transposed at run time
    vocab: int
    hidden: int
    tied: bool


@dataclass
class LMGraph:
    """The prepared float model and what the step may quantize in it."""

    model: Any                                   # onnx.ModelProto, weights loaded, canonical form
    linears: list[Linear] = field(default_factory=list)
    embedding: Embedding | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def lm_head(self) -> Linear | None:
        return next((lin for lin in self.linears if lin.role == "lm_head"), None)

    def weight(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(self._inits()[name])

    def _inits(self) -> dict[str, Any]:
        return {t.name: t for t in self.model.graph.initializer}

    def embedding_table(self) -> np.ndarray:
        """The embedding as a MatMul weight [H, V] (the layout MatMulNBits quantizes)."""
        assert self.embedding is not None
        w = self.weight(self.embedding.table)
        return w if self.embedding.transposed else w.T


def _block_of(name: str) -> int | None:
    m = _BLOCK.search(name)
    if not m:
        return None
    return int(next(g for g in m.groups() if g is not None))


def _float2d(t: Any) -> bool:
    from onnx import TensorProto

    return t is not None and len(t.dims) == 2 and t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)


def prepare(model: Any, logits_name: str, vocab: int | None, input_ids: str) -> LMGraph:
    """Canonical form of ``model`` (changed in place): named nodes, head weights as initializers."""
    from onnx import helper, numpy_helper

    graph = model.graph
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    notes: list[str] = []

    def transposed_init(name: str) -> str | None:
        """The initializer behind ``name`` when ``name`` is Transpose(perm 1,0) of a 2-D one."""
        p = producers.get(name)
        if p is None or p.op_type != "Transpose" or p.input[0] not in inits:
            return None
        perm = next((list(helper.get_attribute_value(a)) for a in p.attribute if a.name == "perm"), [1, 0])
        return p.input[0] if perm == [1, 0] and _float2d(inits[p.input[0]]) else None

    # MatMul(x, Transpose(W)): give the MatMul its own [K, N] weight (the embedding keeps W)
    dead: set[str] = set()
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] in inits:
            continue
        src = transposed_init(node.input[1])
        if src is None:
            continue
        w = numpy_helper.to_array(inits[src]).T
        name = f"{src}.T"
        if name not in inits:
            t = numpy_helper.from_array(np.ascontiguousarray(w), name)
            graph.initializer.append(t)
            inits[name] = t
        tp = producers[node.input[1]]
        if len(consumers.get(tp.output[0], [])) == 1:
            dead.add(tp.name)
        node.input[1] = name
    if dead:
        keep = [n for n in graph.node if n.name not in dead]
        del graph.node[:]
        graph.node.extend(keep)
        producers = {o: n for n in graph.node for o in n.output}

    reaches_logits = _ancestors(graph, logits_name)
    linears: list[Linear] = []
    for node in graph.node:
        if node.op_type != "MatMul" or not _float2d(inits.get(node.input[1])):
            continue
        k, n = (int(d) for d in inits[node.input[1]].dims)
        linears.append(Linear(node=node.name, weight=node.input[1], input=node.input[0], output=node.output[0],
                              k=k, n=n, role="linear", block=_block_of(node.name) or _block_of(node.input[1])))
    heads = [lin for lin in linears if lin.node in reaches_logits and (vocab is None or lin.n == vocab)]
    head = heads[-1] if heads else None
    if head is not None:
        linears = [Linear(**{**lin.__dict__, "role": "lm_head"}) if lin is head else lin for lin in linears]

    embedding = None
    for node in graph.node:
        if node.op_type != "Gather" or not _feeds_from(graph, node.input[1], input_ids):
            continue
        table, transposed = node.input[0], False
        if table not in inits:
            src = transposed_init(table)
            if src is None:
                continue
            table, transposed = src, True
        if not _float2d(inits[table]):
            continue
        dims = [int(d) for d in inits[table].dims]
        v, h = (dims[1], dims[0]) if transposed else (dims[0], dims[1])
        tied = head is not None and (
            (transposed and table == head.weight) or (not transposed and head.weight == f"{table}.T")
            or (head.k == h and head.n == v and np.array_equal(
                numpy_helper.to_array(inits[table]) if transposed else numpy_helper.to_array(inits[table]).T,
                numpy_helper.to_array(inits[head.weight]))))
        embedding = Embedding(node=node.name, table=table, transposed=transposed, vocab=v, hidden=h, tied=tied)
        break
    return LMGraph(model=model, linears=linears, embedding=embedding, notes=notes)


def _ancestors(graph: Any, output: str) -> set[str]:
    """Names of the nodes whose results flow into ``output``."""
    producers = {o: n for n in graph.node for o in n.output}
    seen: set[str] = set()
    todo = [output]
    while todo:
        p = producers.get(todo.pop())
        if p is None or p.name in seen:
            continue
        seen.add(p.name)
        todo.extend(p.input)
    return seen


def _feeds_from(graph: Any, tensor: str, source: str, depth: int = 4) -> bool:
    """``tensor`` is ``source`` or reaches it through a few shape-keeping nodes (Cast, Reshape …)."""
    producers = {o: n for n in graph.node for o in n.output}
    for _ in range(depth + 1):
        if tensor == source:
            return True
        p = producers.get(tensor)
        if p is None or p.op_type not in ("Cast", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten"):
            return False
        tensor = p.input[0]
    return False


@dataclass
class Plan:
    """What the assembled model holds: per linear layer its quantized weight (None = float)."""

    layers: dict[str, QuantLayer | None]
    embedding: QuantLayer | None = None        # the embedding table [H, V] quantized (untied), if any
    accuracy_level: int = 0
    node_accuracy: dict[str, int] = field(default_factory=dict)   # per-layer accuracy_level overrides
    tied_embedding: bool = True                # a tied embedding reads the quantized head (else stays float)


def assemble(lmg: LMGraph, plan: Plan) -> Any:
    """A new ModelProto: chosen MatMuls as MatMulNBits, the embedding as GatherBlockQuantized."""
    import onnx
    from onnx import helper

    src = lmg.model
    out = onnx.ModelProto()
    out.CopyFrom(_shell(src))
    graph = out.graph
    new_inits: list[Any] = []
    by_node = {lin.node: lin for lin in lmg.linears}
    head = lmg.lm_head
    emb = lmg.embedding
    head_names: dict[str, str] = {}
    if head is not None and plan.layers.get(head.node) is not None:
        head_q = plan.layers[head.node]
        assert head_q is not None
        head_names = _add_quant_inits(new_inits, head.weight, head_q)
    nodes: list[Any] = []
    for node in src.graph.node:
        lin = by_node.get(node.name)
        q = plan.layers.get(node.name) if lin is not None else None
        if lin is not None and q is not None:
            names = head_names if head is not None and lin.node == head.node else \
                _add_quant_inits(new_inits, lin.weight, q)
            attrs: dict[str, Any] = {"K": q.k, "N": q.n, "bits": q.bits, "block_size": q.block_size}
            level = plan.node_accuracy.get(node.name, plan.accuracy_level)
            if level:
                attrs["accuracy_level"] = level
            inputs = [lin.input, names["packed"], names["scales"]] + ([names["zp"]] if "zp" in names else [])
            nodes.append(helper.make_node("MatMulNBits", inputs, [lin.output], name=f"{node.name}_Q{q.bits}",
                                          domain="com.microsoft", **attrs))
            continue
        if emb is not None and node.name == emb.node:
            gathered = _gather_nodes(node, lmg, plan, head_names, new_inits)
            if gathered is not None:
                nodes.extend(gathered)
                continue
        nodes.append(node)
    graph.node.extend(_live(nodes, {o.name for o in src.graph.output}))
    used = {x for n in graph.node for x in n.input} | {o.name for o in graph.output}
    for n in graph.node:  # subgraph bodies (If/Loop) may read outer initializers
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                used |= {x for sub in a.g.node for x in sub.input}
    graph.initializer.extend([t for t in src.graph.initializer if t.name in used])
    graph.initializer.extend([t for t in new_inits if t.name in used])
    if not any(o.domain == "com.microsoft" for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return out


def _live(nodes: list[Any], outputs: set[str]) -> list[Any]:
    """``nodes`` without those whose results nothing reads any more (e.g. the float table's Transpose)."""
    import onnx

    keep = list(nodes)
    while True:
        read = set(outputs)
        for n in keep:
            read.update(n.input)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    read.update(x for sub in a.g.node for x in sub.input)
        alive = [n for n in keep if any(o in read for o in n.output) or not n.output]
        if len(alive) == len(keep):
            return keep
        keep = alive


def _shell(model: Any) -> Any:
    """``model`` without nodes and initializers (a cheap copy: the weights are not duplicated)."""
    import onnx

    shell = onnx.ModelProto()
    nodes, inits = model.graph.node, model.graph.initializer
    saved_nodes, saved_inits = list(nodes), list(inits)
    del model.graph.node[:]
    del model.graph.initializer[:]
    try:
        shell.CopyFrom(model)
    finally:
        model.graph.node.extend(saved_nodes)
        model.graph.initializer.extend(saved_inits)
    return shell


def _add_quant_inits(sink: list[Any], weight: str, q: QuantLayer, flat: bool = False) -> dict[str, str]:
    """Initializers of ``q`` named after the float weight; ``flat``: packed as [N, k_blocks * blob] (a table)."""
    from onnx import numpy_helper

    names = {"packed": f"{weight}_Q{q.bits}", "scales": f"{weight}_Q{q.bits}_scales"}
    packed = q.packed.reshape(q.n, -1) if flat else q.packed
    sink.append(numpy_helper.from_array(np.ascontiguousarray(packed), names["packed"]))
    sink.append(numpy_helper.from_array(q.scales.astype(np.float32), names["scales"]))
    if q.zero_points is not None:
        names["zp"] = f"{weight}_Q{q.bits}_zero_points"
        sink.append(numpy_helper.from_array(q.zero_points, names["zp"]))
    return names


def _gather_nodes(node: Any, lmg: LMGraph, plan: Plan, head_names: dict[str, str],
                  sink: list[Any]) -> list[Any] | None:
    """GatherBlockQuantized (+ Reshape of a shared weight, + Slice of block padding) for the embedding."""
    from onnx import helper, numpy_helper

    emb = lmg.embedding
    head = lmg.lm_head
    assert emb is not None
    if emb.tied and plan.tied_embedding and head is not None and head_names and plan.layers.get(head.node):
        q = plan.layers[head.node]
        assert q is not None
        if not q.integer_zero_points:
            return None
        flat = q.k_blocks * q.packed.shape[2]
        shape_name = f"{node.name}_table_shape"
        sink.append(numpy_helper.from_array(np.array([emb.vocab, flat], dtype=np.int64), shape_name))
        table = f"{node.name}_table"
        pre = [helper.make_node("Reshape", [head_names["packed"], shape_name], [table], name=f"{node.name}_Reshape")]
        scales, zp = head_names["scales"], head_names.get("zp", "")
    elif plan.embedding is not None and not emb.tied:
        q = plan.embedding
        names = _add_quant_inits(sink, emb.table, q, flat=True)
        pre, table, scales, zp = [], names["packed"], names["scales"], names.get("zp", "")
    else:
        return None
    inputs = [table, node.input[1], scales] + ([zp] if zp else [])
    padded = q.k_blocks * q.block_size != emb.hidden
    gout = f"{node.output[0]}_padded" if padded else node.output[0]
    nodes = pre + [helper.make_node("GatherBlockQuantized", inputs, [gout], name=f"{node.name}_Q{q.bits}",
                                    domain="com.microsoft", bits=q.bits, block_size=q.block_size, gather_axis=0,
                                    quantize_axis=1)]
    if padded:
        consts = {"starts": [0], "ends": [emb.hidden], "axes": [-1]}
        for key, val in consts.items():
            sink.append(numpy_helper.from_array(np.array(val, dtype=np.int64), f"{node.name}_slice_{key}"))
        nodes.append(helper.make_node("Slice", [gout] + [f"{node.name}_slice_{k}" for k in consts],
                                      [node.output[0]], name=f"{node.name}_Slice"))
    return nodes
