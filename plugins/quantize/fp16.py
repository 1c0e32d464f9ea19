"""FP16 conversion: halves the file; fast on GPUs, usually not on CPU (and we say so)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from slimline.core.handle import ModelHandle
from slimline.core.plugin import Problem, StepContext
from slimline.plugins.quantize import arithmetic
from slimline.plugins.quantize.base import Attempt, QuantizeBase, int8_tensor_count, quantized_ops
from slimline.plugins.quantize.params import GuardrailParams
from slimline.plugins.quantize.prep import count_ops


class Fp16Params(GuardrailParams):
    keep_io_types: bool = Field(True, description=(
        "Keep float32 model inputs/outputs (casts inside), so callers need no change."))
    op_block_list: tuple[str, ...] | None = Field(None, description=(
        "Op types to keep in float32; empty/None = onnxruntime's default list of ops without fp16 kernels."))
    node_block_list: tuple[str, ...] = Field((), description="Node names to keep in float32.")


class ConvertFp16(QuantizeBase):
    id: ClassVar[str] = "builtin.quantize_fp16"
    version: ClassVar[str] = "1"
    title: ClassVar[str] = "Convert: FP16"
    description: ClassVar[str] = (
        "Converts weights and compute to 16-bit floats: half the size with tiny error. Fast on GPUs; on most "
        "CPUs onnxruntime runs fp16 through casts and is slower than fp32 — measured and flagged.")
    Params: ClassVar = Fp16Params
    supports_per_channel: ClassVar[bool] = False
    optimize_first: ClassVar[bool] = False
    min_opset: ClassVar[int] = 0  # fp16 conversion works at any opset: do not risk the version converter

    def check(self, model: ModelHandle, params: Fp16Params) -> list[Problem]:  # type: ignore[override]
        problems = self.check_format(model)
        if problems:
            return problems
        try:
            from onnx import TensorProto

            model_proto = self._load_graph(model)
            g = model_proto.graph
        except Exception as exc:  # noqa: BLE001
            return [Problem(f"cannot read the ONNX graph: {exc}", fix="re-export the model")]
        already = quantized_ops(count_ops(model_proto))
        if already:  # fp16 would only touch the float scales around the int8 kernels, and break their types
            return problems + [Problem(
                f"the model is already quantized ({int8_tensor_count(model_proto)} int8 tensors; "
                + ", ".join(f"{n} {op}" for op, n in sorted(already.items(), key=lambda x: -x[1])[:4])
                + "): FP16 conversion applies to float models",
                fix="convert the float model instead, or remove this step")]
        if not any(i.data_type == TensorProto.FLOAT for i in g.initializer):
            problems.append(Problem("no float32 weights to convert (already fp16 or integer?)", severity="warning"))
        return problems

    def _first_attempt(self, params: Fp16Params, model_ops: dict[str, int]) -> Attempt:
        return Attempt(per_channel=False, reduce_range=False, op_types=(), exclude=tuple(params.node_block_list))

    def _quantize(self, src: Path, dst: Path, attempt: Attempt, params: Fp16Params, ctx: StepContext) -> None:
        import onnx
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        model = onnx.load(str(src))
        blocked = list(params.op_block_list) if params.op_block_list else list(DEFAULT_OP_BLOCK_LIST)
        if params.op_types_to_exclude:
            blocked += [o for o in params.op_types_to_exclude if o not in blocked]
        converted = convert_float_to_float16(model, keep_io_types=params.keep_io_types, op_block_list=blocked,
                                             node_block_list=list(attempt.exclude) or None)
        topo_sort(converted.graph)
        onnx.save(converted, str(dst))

    def _table(self, float_model: Any, q_model: Any) -> list[dict[str, Any]]:
        return arithmetic.fp16_table(float_model, q_model)

    def _explain(self, params: Any, attempt: Attempt, q_ops: dict[str, int], size_ratio: float,
                 latency_ratio: float, flags: dict[str, bool]) -> list[str]:
        out = [f"onnxruntime's CPU provider has fp16 kernels for few ops: it inserts Cast nodes "
               f"({q_ops.get('Cast', 0)} in this graph) and computes in fp32 — FP16 pays off on GPUs; "
               "on CPU use static or dynamic INT8 for speed."]
        if size_ratio > 0.6:
            out.append("Size: blocked ops/nodes keep fp32 weights (op_block_list/node_block_list).")
        return out


def _subgraphs(node: Any) -> list[Any]:
    from onnx import AttributeProto

    out = []
    for a in node.attribute:
        if a.type == AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


def _outer_refs(graph: Any) -> set[str]:
    """Names a (sub)graph reads from enclosing scopes: used by its nodes (or nested bodies), defined nowhere in it."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    defined |= {o for n in graph.node for o in n.output}
    used: set[str] = set()
    for n in graph.node:
        used.update(n.input)
        for g in _subgraphs(n):
            used |= _outer_refs(g)
    used.update(o.name for o in graph.output)
    return used - defined


def _node_reads(node: Any) -> list[str]:
    """A node's inputs, including the outer-scope names its If/Loop/Scan bodies read (implicit inputs)."""
    reads = list(node.input)
    for g in _subgraphs(node):
        reads += sorted(_outer_refs(g))
    return reads


def topo_sort(graph: Any) -> None:
    """Reorder nodes topologically, in the graph and in every If/Loop/Scan body.

    Why: the converter appends its Cast nodes at the end of the graph they belong to, which the checker (and
    onnxruntime) refuses; a body reading a Cast's output from the outer graph makes its If node depend on it.
    """
    produced_by: dict[str, int] = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    nodes = list(graph.node)
    deps = [[produced_by[x] for x in _node_reads(n) if x not in available and x in produced_by] for n in nodes]
    order: list[int] = []
    state = [0] * len(nodes)  # 0 new, 1 visiting, 2 done
    for start in range(len(nodes)):
        stack = [(start, 0)]
        while stack:
            i, k = stack.pop()
            if state[i] == 2:
                continue
            state[i] = 1
            if k < len(deps[i]):
                stack.append((i, k + 1))
                d = deps[i][k]
                if state[d] == 0:
                    stack.append((d, 0))
                continue
            state[i] = 2
            order.append(i)
    sorted_nodes = [nodes[i] for i in order]
    del graph.node[:]
    graph.node.extend(sorted_nodes)
    for node in graph.node:
        for g in _subgraphs(node):
            topo_sort(g)
