"""Pre-processing before quantization: repair, upgrade, optimise, so old exports quantize.

Why: onnxruntime.quantization assumes a modern, shape-inferred graph. Models from
older exporters keep initializers in ``graph.input`` (which blocks constant folding
and makes weights look like activations), use opsets below 13 (no per-channel
QDQ), or lack shapes. We fix what we can and say what we did.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from slimline.core.errors import StepFailed

if TYPE_CHECKING:  # pragma: no cover
    import onnx

MIN_OPSET = 13
log = logging.getLogger(__name__)


def load_model(path: str | Path) -> "onnx.ModelProto":
    """Load an ONNX model with its external data (from its own folder only)."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=True)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's file
        raise StepFailed(f"cannot read the ONNX model: {exc}", subject=str(path),
                         hint="check that the file is a complete ONNX model (re-export it)") from exc


def default_opset(model: "onnx.ModelProto") -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def remove_initializer_inputs(model: "onnx.ModelProto") -> int:
    """Drop graph inputs that are also initializers (IR<4 exporters); returns how many."""
    inits = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    removed = len(model.graph.input) - len(keep)
    if removed:
        del model.graph.input[:]
        model.graph.input.extend(keep)
        model.ir_version = max(model.ir_version, 4)
    return removed


def upgrade_opset(model: "onnx.ModelProto", target: int = MIN_OPSET) -> "onnx.ModelProto":
    """Convert the default-domain opset up to ``target`` with onnx's version converter."""
    import onnx
    from onnx import version_converter

    converted = version_converter.convert_version(model, target)
    ops = [onnx.helper.make_opsetid(i.domain, i.version) for i in converted.opset_import]
    converted.ir_version = max(converted.ir_version, onnx.helper.find_min_ir_version_for(ops))
    return converted


def gemm_to_matmul(model: "onnx.ModelProto") -> int:
    """Rewrite ``Gemm(A, const B, C)`` as ``MatMul + Add``; returns how many were rewritten.

    Why: onnxruntime has no dynamic-INT8 Gemm, so Linear layers exported as Gemm
    would stay fp32. The MatMul keeps the Gemm's node name, so exclusion lists still apply.
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    new_nodes = []
    new_inits = []
    count = 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        ok = (node.op_type == "Gemm" and node.domain in ("", "ai.onnx") and len(node.input) >= 2
              and node.input[1] in inits and int(attrs.get("transA", 0)) == 0)
        if not ok:
            new_nodes.append(node)
            continue
        c_name = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        alpha = float(attrs.get("alpha", 1.0))
        beta = float(attrs.get("beta", 1.0))
        if c_name and beta != 1.0 and c_name not in inits:
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if int(attrs.get("transB", 0)):
            w = w.T
        w = np.ascontiguousarray(w * alpha if alpha != 1.0 else w)
        w_name = f"{node.input[1]}__matmul_w"
        new_inits.append(numpy_helper.from_array(w.astype(w.dtype), w_name))
        y = node.output[0]
        mm_out = f"{y}__matmul" if c_name else y
        new_nodes.append(helper.make_node("MatMul", [node.input[0], w_name], [mm_out], name=node.name or f"{y}_MatMul"))
        if c_name:
            if beta != 1.0:
                c = numpy_helper.to_array(inits[c_name]) * beta
                c_name = f"{c_name}__beta"
                new_inits.append(numpy_helper.from_array(c.astype(np.float32), c_name))
            new_nodes.append(helper.make_node("Add", [mm_out, c_name], [y], name=f"{node.name or y}_bias"))
        count += 1
    if count:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
        model.graph.initializer.extend(new_inits)
        used = {i for n in model.graph.node for i in n.input}
        keep = [i for i in model.graph.initializer if i.name in used or i.name in {o.name for o in model.graph.output}]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    return count


def preprocess(src: str | Path, dst: Path, *, optimize: bool = True, gemm_rewrite: bool = False,
               min_opset: int = MIN_OPSET) -> tuple[Path, list[str]]:
    """Write a repaired, shape-inferred, optimised copy of ``src`` to ``dst``.

    Returns the path and human-readable notes of what was changed.
    """
    import onnx

    from slimline.core.models.onnx_fold import count_constant_nodes, fold_constants_to_initializers

    notes: list[str] = []
    model = load_model(src)
    n_const = count_constant_nodes(model)
    if n_const:  # paddle2onnx/spox keep weights in Constant nodes; ORT's quantizers see initializers only
        model = fold_constants_to_initializers(model)
        moved = n_const - count_constant_nodes(model)
        notes.append(f"pre-processing: moved {moved} Constant-node tensor(s) into initializers "
                     "so the quantizer finds the weights")
    n = remove_initializer_inputs(model)
    if n:
        notes.append(f"pre-processing: removed {n} initializer(s) listed as graph inputs (old exporter)")
    opset = default_opset(model)
    if opset and opset < min_opset:
        try:
            model = upgrade_opset(model, min_opset)
            notes.append(f"pre-processing: upgraded opset {opset} → {min_opset} (needed for per-channel/QDQ)")
        except Exception as exc:  # noqa: BLE001
            raise StepFailed(
                f"opset {opset} could not be upgraded to {min_opset}: {exc}", subject="pre-processing",
                hint=f"re-export the model with opset ≥ {min_opset}") from exc
    repaired = dst.with_name(dst.stem + ".repaired.onnx")
    _save(model, repaired)
    del model
    if optimize:
        tries: list[tuple[str, dict[str, Any]]] = [
            ("shape inference + ORT graph optimisation", {}),
            ("ONNX shape inference + ORT graph optimisation (symbolic shape inference failed)",
             {"skip_symbolic_shape": True}),
            ("ONNX shape inference only (graph optimisation failed)",
             {"skip_symbolic_shape": True, "skip_optimization": True}),
        ]
        from onnxruntime.quantization.shape_inference import quant_pre_process

        last_err: Exception | None = None
        for label, kwargs in tries:
            try:
                # quant_pre_process drops temp files (sym_shape_infer_temp.onnx, <uuid>.data)
                # into the current directory: keep them inside the step's folder.
                with _inside(dst.parent):
                    quant_pre_process(str(repaired.resolve()), str(dst.resolve()), **kwargs)
                notes.append(f"pre-processing: {label}")
                last_err = None
                break
            except Exception as exc:  # noqa: BLE001 - fall back to a lighter pre-process
                last_err = exc
                log.info("quant_pre_process %s failed: %s", kwargs, exc)
        if last_err is not None:
            notes.append(f"pre-processing: skipped optimisation ({type(last_err).__name__}: {last_err})")
            repaired.replace(dst)
        else:
            repaired.unlink(missing_ok=True)
    else:
        repaired.replace(dst)
    if gemm_rewrite:
        model = onnx.load(str(dst))
        k = gemm_to_matmul(model)
        if k:
            try:
                model = onnx.shape_inference.infer_shapes(model)
            except Exception:  # noqa: BLE001 - shapes are a nicety for dynamic quantization
                pass
            _save(model, dst)
            notes.append(f"pre-processing: rewrote {k} Gemm node(s) as MatMul+Add (ORT has no dynamic INT8 Gemm)")
    return dst, notes


def _save(model: "onnx.ModelProto", path: Path) -> None:
    import onnx

    if model.ByteSize() > 1_800_000_000:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data")
    else:
        onnx.save(model, str(path))


def count_ops(model: "onnx.ModelProto", *, subgraphs: bool = True) -> dict[str, int]:
    """Op types and how many nodes of each, by default including If/Loop/Scan bodies.

    Why: exporters such as spox put every layer inside an ``If`` branch; counting the top level only
    would report "Constant/Equal/If" for a model whose weights onnxruntime quantizes fine in subgraphs.
    """
    from slimline.core.models.onnx_files import iter_graphs

    out: dict[str, int] = {}
    graphs = iter_graphs(model.graph) if subgraphs else [model.graph]
    for graph in graphs:
        for node in graph.node:
            out[node.op_type] = out.get(node.op_type, 0) + 1
    return out


def float_weights_by_op(model: "onnx.ModelProto") -> dict[str, int]:
    """float32 weight values (initializers and Constant-node tensors) per op type that reads them, top level only.

    Why: a quantizer only touches the weights of the op types it supports; when nearly all weights sit in
    other ops (LSTM for the static quantizer), the step can say so before doing any work.
    """
    import math

    from onnx import TensorProto

    sizes = {i.name: int(math.prod(i.dims)) for i in model.graph.initializer if i.data_type == TensorProto.FLOAT}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    sizes[node.output[0]] = int(math.prod(a.t.dims))
    out: dict[str, int] = {}
    seen: set[str] = set()
    for node in model.graph.node:
        for name in node.input:
            if name in sizes and name not in seen:
                seen.add(name)
                out[node.op_type] = out.get(node.op_type, 0) + sizes[name]
    return out


def subgraph_only_ops(model: "onnx.ModelProto", wanted: tuple[str, ...]) -> dict[str, int]:
    """Op types of ``wanted`` that occur only inside subgraphs (If/Loop/Scan bodies), with their counts."""
    top = count_ops(model, subgraphs=False)
    every = count_ops(model)
    return {op: n for op, n in every.items() if op in wanted and not top.get(op)}


@contextlib.contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """Run with ``folder`` (a private temp subfolder of it) as the working directory."""
    import os
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix=".prep-", dir=folder))
    old = os.getcwd()
    os.chdir(scratch)
    try:
        yield
    finally:
        os.chdir(old)
        shutil.rmtree(scratch, ignore_errors=True)
