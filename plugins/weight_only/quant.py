"""Block-wise weight quantization through onnxruntime's MatMulNBitsQuantizer, one layer's result at a time.

The quantizer rewrites a whole graph; the step needs each layer's packed weight, scales and zero
points on their own, at 4 and at 8 bits, to put a mixed-precision model together many times
without quantizing again. So each algorithm runs once over a graph of just the weights (GPTQ,
which needs activations, over the whole model with its calibration windows), and the
MatMulNBits it writes for each layer is harvested as a :class:`QuantLayer`.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Algorithm = Literal["rtn", "hqq", "gptq", "k_quant"]
# Algorithms whose zero points are integers: the only ones GatherBlockQuantized (the embedding) can read.
GATHER_COMPATIBLE: tuple[Algorithm, ...] = ("rtn", "k_quant", "gptq")


@dataclass
class QuantLayer:
    """One MatMul weight [K, N] as MatMulNBits holds it: packed [N, k_blocks, blob], scales [N, k_blocks]."""

    bits: int
    block_size: int
    k: int
    n: int
    packed: np.ndarray               # uint8 [N, k_blocks, blob]
    scales: np.ndarray               # float [N, k_blocks]
    zero_points: np.ndarray | None   # uint8 packed [N, ceil(k_blocks*bits/8)], or float [N, k_blocks] (HQQ)
    algorithm: str

    @property
    def k_blocks(self) -> int:
        return int(self.packed.shape[1])

    @property
    def nbytes(self) -> int:
        zp = self.zero_points.nbytes if self.zero_points is not None else 0
        return int(self.packed.nbytes + self.scales.nbytes + zp)

    @property
    def integer_zero_points(self) -> bool:
        return self.zero_points is None or self.zero_points.dtype == np.uint8

    def dequantize(self) -> np.ndarray:
        """The float weight [K, N] this layer computes with (the kernels' arithmetic, in numpy)."""
        n, kb, blob = self.packed.shape
        if self.bits == 4:
            q = np.empty((n, kb, blob * 2), dtype=np.float32)
            q[..., 0::2] = self.packed & 0x0F
            q[..., 1::2] = self.packed >> 4
        else:
            q = self.packed.astype(np.float32)
        mid = float(1 << (self.bits - 1))
        if self.zero_points is None:
            zp = np.full((n, kb), mid, dtype=np.float32)
        elif self.zero_points.dtype == np.uint8:
            zp = unpack_zero_points(self.zero_points, n, kb, self.bits).astype(np.float32)
        else:
            zp = self.zero_points.reshape(n, kb).astype(np.float32)
        w = (q - zp[..., None]) * self.scales.reshape(n, kb)[..., None].astype(np.float32)
        return w.reshape(n, kb * self.block_size)[:, : self.k].T.copy()


def unpack_zero_points(zp: np.ndarray, n: int, k_blocks: int, bits: int) -> np.ndarray:
    """uint8 zero points [N, k_blocks] from MatMulNBits' packed layout (two 4-bit values a byte, low first)."""
    if bits == 8:
        return zp.reshape(n, k_blocks)
    flat = zp.reshape(n, -1)
    out = np.empty((n, flat.shape[1] * 2), dtype=np.uint8)
    out[:, 0::2] = flat & 0x0F
    out[:, 1::2] = flat >> 4
    return out[:, :k_blocks]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """onnxruntime's quantizer logs every node at INFO, prints progress bars and configures the root
    logger when imported: keep all of that out of the step's log and the terminal."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = ("onnxruntime.quantization.matmul_nbits_quantizer", "neural_compressor", "onnxruntime.quantization")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
        for n, lv in saved.items():
            logging.getLogger(n).setLevel(lv)


def _config(algorithm: Algorithm, bits: int, block_size: int, symmetric: bool, reader: Any,
            nodes: list[str]) -> Any:
    with quiet():
        from onnxruntime.quantization import matmul_nbits_quantizer as mnq
    if algorithm == "rtn":
        return mnq.DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=symmetric, bits=bits)
    if algorithm == "hqq":
        return mnq.HQQWeightOnlyQuantConfig(block_size=block_size, bits=bits)
    per_node = {n: {"bits": bits, "group_size": block_size, "scheme": "sym" if symmetric else "asym"} for n in nodes}
    if algorithm == "k_quant":
        return mnq.KQuantWeightOnlyQuantConfig(customized_weight_config=per_node)
    if algorithm == "gptq":
        cfg = mnq.GPTQWeightOnlyQuantConfig(calibration_data_reader=reader, block_size=128, perchannel=True)
        cfg.customized_weight_config = per_node
        return cfg
    raise ValueError(f"unknown algorithm {algorithm!r}")


def run_quantizer(model: Any, nodes: list[str], *, algorithm: Algorithm, bits: int, block_size: int,
                  symmetric: bool, reader: Any = None) -> Any:
    """``model`` with the MatMuls named in ``nodes`` replaced by MatMulNBits (the model is changed in place)."""
    cfg = _config(algorithm, bits, block_size, symmetric, reader, nodes)
    with quiet():
        from onnxruntime.quantization import matmul_nbits_quantizer as mnq

        wanted = set(nodes)
        exclude = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in wanted]
        q = mnq.MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=symmetric,
                                     nodes_to_exclude=exclude, algo_config=cfg)
        q.process()
        out = q.model.model if hasattr(q.model, "model") else q.model
    return out


def weights_graph(layers: list[tuple[str, str, np.ndarray]]) -> Any:
    """A graph of bare MatMuls (node name, output name, weight [K, N]): all a data-free quantizer reads."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, inputs, outputs = [], [], [], []
    for i, (name, out, w) in enumerate(layers):
        x, wn = f"x{i}", f"{name}.weight"
        nodes.append(helper.make_node("MatMul", [x, wn], [out], name=name))
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w, dtype=np.float32), wn))
        inputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, ["n", int(w.shape[0])]))
        outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, ["n", int(w.shape[1])]))
    graph = helper.make_graph(nodes, "weights", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def quantize_weights(names: list[str], weight: Callable[[str], np.ndarray], *, algorithm: Algorithm, bits: int,
                     block_size: int, symmetric: bool, chunk_bytes: int = 32 << 20, cancel: Any = None,
                     progress: Any = None) -> dict[str, QuantLayer]:
    """Each weight [K, N] (``weight(name)``) quantized on its own by a data-free algorithm (not GPTQ), in
    chunks of ~32 MB so memory stays low and a cancel is seen between chunks.

    k-quant packs zero points over the whole tensor, which onnxruntime gets wrong when a row has an
    odd number of blocks: such weights are padded with zero rows to an even block count and the
    padding block is cut off again (blocks are quantized independently, so nothing else changes).
    """
    out: dict[str, QuantLayer] = {}
    rows: dict[str, int] = {}
    done = 0
    while done < len(names):
        chunk: list[tuple[str, str, np.ndarray]] = []
        size = 0
        while done < len(names) and (not chunk or size < chunk_bytes):
            name = names[done]
            w = weight(name)
            rows[name] = int(w.shape[0])
            kb = -(-w.shape[0] // block_size)
            if algorithm == "k_quant" and bits == 4 and kb % 2:
                w = np.concatenate([w, np.zeros(((kb + 1) * block_size - w.shape[0], w.shape[1]), w.dtype)])
            chunk.append((name, f"{name}.out", w))
            size += w.nbytes
            done += 1
        if cancel is not None:
            cancel.raise_if_cancelled()
        model = run_quantizer(weights_graph(chunk), [c[0] for c in chunk], algorithm=algorithm, bits=bits,
                              block_size=block_size, symmetric=symmetric)
        got = harvest(model, {c[0]: c[1] for c in chunk}, algorithm)
        for name, _, _ in chunk:
            if name not in got:
                raise RuntimeError(f"onnxruntime's quantizer left {name} unquantized")
            out[name] = trim(got[name], rows[name])
        if progress is not None:
            progress(done / len(names))
    return out


def trim(q: QuantLayer, k: int) -> QuantLayer:
    """``q`` for the first ``k`` input rows: blocks past them (zero padding) dropped."""
    kb = -(-k // q.block_size)
    if kb == q.k_blocks and k == q.k:
        return q
    zp = q.zero_points
    if zp is not None:
        if zp.dtype == np.uint8:
            zp = pack_zero_points(unpack_zero_points(zp, q.n, q.k_blocks, q.bits)[:, :kb], q.bits)
        else:
            zp = zp[:, :kb]
    return QuantLayer(bits=q.bits, block_size=q.block_size, k=k, n=q.n, packed=np.ascontiguousarray(q.packed[:, :kb]),
                      scales=np.ascontiguousarray(q.scales[:, :kb]), zero_points=zp, algorithm=q.algorithm)


def pack_zero_points(zp: np.ndarray, bits: int) -> np.ndarray:
    """MatMulNBits' packed uint8 zero points from [N, k_blocks] values (4-bit: two a byte, low first; pad 8)."""
    if bits == 8:
        return np.ascontiguousarray(zp, dtype=np.uint8)
    n, kb = zp.shape
    padded = np.full((n, kb + kb % 2), 8, dtype=np.uint8)
    padded[:, :kb] = zp
    return (padded[:, 0::2] | (padded[:, 1::2] << 4)).astype(np.uint8)


def harvest(model: Any, outputs: dict[str, str], algorithm: str) -> dict[str, QuantLayer]:
    """Per layer (keyed by the original MatMul's name), the MatMulNBits the quantizer wrote for its output."""
    from onnx import helper, numpy_helper

    by_out = {n.output[0]: n for n in model.graph.node if n.op_type == "MatMulNBits"}
    inits = {t.name: t for t in model.graph.initializer}
    found: dict[str, QuantLayer] = {}
    for layer, out in outputs.items():
        node = by_out.get(out)
        if node is None:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        k, n, bits, block = int(attrs["K"]), int(attrs["N"]), int(attrs["bits"]), int(attrs["block_size"])
        kb = (k + block - 1) // block
        packed = numpy_helper.to_array(inits[node.input[1]]).reshape(n, kb, -1)
        scales = numpy_helper.to_array(inits[node.input[2]]).reshape(n, kb)
        zp = None
        if len(node.input) > 3 and node.input[3]:
            zp = numpy_helper.to_array(inits[node.input[3]])
            zp = zp.reshape(n, -1) if zp.dtype == np.uint8 else zp.reshape(n, kb)
        found[layer] = QuantLayer(bits=bits, block_size=block, k=k, n=n, packed=np.ascontiguousarray(packed),
                                  scales=np.ascontiguousarray(scales), zero_points=zp, algorithm=algorithm)
    return found


class FeedReader:
    """Calibration feeds for onnxruntime's GPTQ (its CalibrationDataReader protocol: get_next, iteration)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self.feeds):
            return None
        self._i += 1
        return self.feeds[self._i - 1]

    def __iter__(self) -> FeedReader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def quantize_gptq(model: Any, layers: dict[str, str], feeds: list[dict[str, np.ndarray]], *, block_size: int,
                  symmetric: bool) -> dict[str, QuantLayer]:
    """4-bit GPTQ of the MatMuls ``layers`` (node → output) over the whole model, run on ``feeds``.

    onnxruntime runs the model once per distinct layer input and window, so this is the slow
    algorithm; ``model`` is copied (the quantizer rewrites what it is given).
    """
    import onnx

    work = onnx.ModelProto()
    work.CopyFrom(model)
    out = run_quantizer(work, list(layers), algorithm="gptq", bits=4, block_size=block_size, symmetric=symmetric,
                        reader=FeedReader(feeds))
    return harvest(out, layers, "gptq")
