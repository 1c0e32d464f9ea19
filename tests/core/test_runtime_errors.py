"""A graph that rejects its inputs at run time ends in a DataError a user can act on: no onnxruntime
"[ONNXRuntimeError] : 1 : FAIL :" prefix, no exception type name, the failing node named, a hint about dims."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from slimline.core.errors import DataError
from slimline.core.handle import ModelHandle, TensorSpec
from slimline.core.runtime import clean_runtime_message, open_session

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def _concat_model(tmp: Path) -> ModelHandle:
    """Concat of two inputs along axis 1: rows must match, which only run time can tell (both dims are free)."""
    graph = helper.make_graph(
        [helper.make_node("Concat", ["a", "b"], ["y"], axis=1, name="join_rows")], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["m", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp / "concat.onnx"
    onnx.save(model, str(path))
    return ModelHandle(path=str(path), format="onnx", family="onnx", files=[str(path)],
                       inputs=[TensorSpec(name="a", shape=["n", 4]), TensorSpec(name="b", shape=["m", 4])],
                       outputs=[TensorSpec(name="y", shape=["n", 8])], dim_defaults={"n": 2, "m": 3},
                       bytes_on_disk=path.stat().st_size)


RAW = re.compile(r"ONNXRuntimeError|\bFAIL\b|INVALID_ARGUMENT|\bFail\b|InvalidArgument|RuntimeException|\.cc:\d+")


@pytest.mark.parametrize("prepared", [False, True])
def test_runtime_failure_is_a_clean_data_error(tmp_path: Path, prepared: bool) -> None:
    sess = open_session(_concat_model(tmp_path), threads=1)
    feeds = {"a": np.ones((2, 4), np.float32), "b": np.ones((3, 4), np.float32)}
    with pytest.raises(DataError) as info:
        sess.run_prepared(sess.prepare(feeds)) if prepared else sess.run(feeds)
    msg = info.value.message
    assert not RAW.search(msg), msg
    assert "join_rows" in msg and "[2, 4]" in msg
    assert "--dim" in info.value.hint and "n=2" in info.value.hint


def test_clean_runtime_message_strips_prefix_and_names_innermost_node() -> None:
    exc = Exception("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running If node. "
                    "Name:'If_0' Status Message: Non-zero status code returned while running Concat node. "
                    "Name:'p2o.Concat.7' Status Message: concatbase.h:135 PrepareForComputeImpl Non concat axis "
                    "dimensions must match: Axis 2 has mismatched dimensions of 1 and 4")
    text, node = clean_runtime_message(exc)
    assert text == "Non concat axis dimensions must match: Axis 2 has mismatched dimensions of 1 and 4"
    assert node == "p2o.Concat.7 (Concat)"
