"""Tolerances per precision: the same disagreement passes for int8 and fails for fp32."""
from __future__ import annotations

import numpy as np
import pytest

from slimline.core.export import parity
from slimline.core.export.records import ParityError


def _pair(noise: float, flips: int = 0):
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(200, 10)).astype(np.float32) * 4
    got = ref + rng.normal(size=ref.shape).astype(np.float32) * noise
    for i in range(flips):  # swap the top class of a few rows
        row = got[i]
        a, b = np.argsort(row)[-2:]
        row[a], row[b] = row[b], row[a]
    return [ref], [got]


def test_fp32_is_strict_int8_is_looser():
    ref, got = _pair(0.05)
    fp32 = parity.compare(ref, got, precision="fp32")
    int8 = parity.compare(ref, got, precision="int8")
    assert not fp32.passed and any("max abs" in f for f in fp32.failures)
    assert int8.passed, int8.failures
    assert fp32.max_abs_error == int8.max_abs_error > 0


def test_top1_disagreement_fails_even_int8():
    ref, got = _pair(0.0, flips=20)  # 10 % of rows change class
    rep = parity.compare(ref, got, precision="int8")
    assert not rep.passed and rep.top1_agreement == pytest.approx(0.9)


def test_identical_uses_copy_tolerance():
    ref, got = _pair(1e-3)
    assert parity.compare(ref, got, precision="int8").passed
    assert not parity.compare(ref, got, precision="int8", identical=True).passed


def test_shape_mismatch_is_a_parity_error():
    with pytest.raises(ParityError, match="shape"):
        parity.compare([np.zeros((3, 4))], [np.zeros((3, 5))], precision="fp32")


def test_onnx_precision_detects_int8_and_fp16(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    def save(nodes, inits, name):
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], inits)
        p = tmp_path / name
        onnx.save(helper.make_model(g), str(p))
        return p

    q = save([helper.make_node("QuantizeLinear", ["x", "s"], ["q"]), helper.make_node("DequantizeLinear",
              ["q", "s"], ["y"])], [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])], "q.onnx")
    h = save([helper.make_node("Identity", ["x"], ["y"])], [helper.make_tensor("w", TensorProto.FLOAT16, [1], [1])],
             "h.onnx")
    f = save([helper.make_node("Identity", ["x"], ["y"])], [], "f.onnx")
    assert [parity.onnx_precision(p) for p in (q, h, f)] == ["int8", "fp16", "fp32"]
