"""Triton model repository: config.pbtxt parsed back must match the ONNX model's inputs/outputs."""
from __future__ import annotations

from pathlib import Path

import pytest
from pbtxt import parse_pbtxt  # tests/export/pbtxt.py (test dir is on sys.path)

from slimline.core.export.triton import write_triton_repo


def _io_from_onnx(path: Path):
    import onnx

    m = onnx.load(str(path))
    inits = {t.name for t in m.graph.initializer}

    def spec(v):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
        return v.name, v.type.tensor_type.elem_type, dims

    return [spec(v) for v in m.graph.input if v.name not in inits], [spec(v) for v in m.graph.output]


ONNX_TO_TRITON = {1: "TYPE_FP32", 7: "TYPE_INT64", 10: "TYPE_FP16"}


def test_parser_understands_lists_and_messages():
    cfg = parse_pbtxt('name: "m"  # comment\nmax_batch_size: 8\ninput [ { name: "a" dims: [ 1, -1 ] } ]\n'
                      'dynamic_batching { }\n')
    assert cfg == {"name": "m", "max_batch_size": 8, "input": [{"name": "a", "dims": [1, -1]}],
                   "dynamic_batching": {}}
    with pytest.raises(ValueError):
        parse_pbtxt('input [ { name: "a" ')


def test_config_matches_dynamic_batch_model(mlp_onnx, tmp_path):
    model = mlp_onnx[0]
    d = write_triton_repo(model, tmp_path / "repo", "mlp v1", max_batch_size=32)
    assert d.name == "mlp_v1" and (d / "1" / "model.onnx").read_bytes() == model.read_bytes()
    cfg = parse_pbtxt((d / "config.pbtxt").read_text())
    assert cfg["name"] == "mlp_v1" and cfg["platform"] == "onnxruntime_onnx" and cfg["max_batch_size"] == 32
    ins, outs = _io_from_onnx(model)
    for key, specs in (("input", ins), ("output", outs)):
        got = cfg[key] if isinstance(cfg[key], list) else [cfg[key]]
        assert [g["name"] for g in got] == [s[0] for s in specs]
        for g, (_name, elem, dims) in zip(got, specs):
            assert dims[0] == -1                     # batch dim is dynamic in the model…
            assert g["dims"] == dims[1:]             # …so Triton gets it through max_batch_size
            assert g["data_type"] == ONNX_TO_TRITON[elem]


def test_static_first_dim_means_no_batching(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Cast", ["ids"], ["y"], to=TensorProto.FLOAT16)], "g",
                          [helper.make_tensor_value_info("ids", TensorProto.INT64, [3, "seq"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [3, "seq"])])
    p = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g), str(p))
    cfg = parse_pbtxt((write_triton_repo(p, tmp_path / "repo", "m") / "config.pbtxt").read_text())
    assert cfg["max_batch_size"] == 0 and "dynamic_batching" not in cfg
    assert cfg["input"] == [{"name": "ids", "data_type": "TYPE_INT64", "dims": [3, -1]}]
    assert cfg["output"] == [{"name": "y", "data_type": "TYPE_FP16", "dims": [3, -1]}]
