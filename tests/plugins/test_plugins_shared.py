"""Helpers in slimline.plugins._shared: plugin isolation, the one ONNX external-data check, layer selection."""
from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest

from slimline.core.errors import ModelLoadError
from slimline.core.handle import ModelHandle
from slimline.core.plugin import Problem
from slimline.plugins._shared.layers import matches_any, selection_problems
from slimline.plugins._shared.onnxio import load_onnx_model

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


def _plugin_imports(py: Path) -> set[str]:
    """Top-level plugin packages a file imports (module level and inside functions)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(py.read_text("utf-8"))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        for name in names:
            if name.startswith("slimline.plugins."):
                out.add(name.split(".")[2])
    return out


def test_no_plugin_imports_another_plugin():
    bad = []
    for pkg in sorted(p for p in PLUGINS.iterdir() if (p / "__init__.py").is_file() and p.name != "_shared"):
        for py in pkg.rglob("*.py"):
            others = _plugin_imports(py) - {pkg.name, "_shared"}
            bad += [f"{py.relative_to(PLUGINS)} imports slimline.plugins.{o}" for o in sorted(others)]
    assert not bad, bad
    assert _plugin_imports(PLUGINS / "_shared" / "common.py") == set()  # _shared depends on no plugin


def _external_onnx(folder: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [w])
    path = folder / "m.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path),
                    save_as_external_data=True, all_tensors_to_one_file=True, location="m.data", size_threshold=0)
    return path


def _handle(path: Path) -> ModelHandle:
    return ModelHandle(path=str(path), format="onnx", family="onnx", files=[str(path)])


def _relocate(path: Path, location: str) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    path.write_bytes(model.SerializeToString())


def test_plugins_load_external_data_from_the_model_folder(tmp_path):
    from onnx import numpy_helper

    model = load_onnx_model(_handle(_external_onnx(tmp_path / "ok")))
    np.testing.assert_array_equal(numpy_helper.to_array(model.graph.initializer[0]),
                                  np.arange(12, dtype=np.float32).reshape(4, 3))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_plugins_refuse_external_data_outside_the_model_folder(tmp_path, how):
    path = _external_onnx(tmp_path / "model")
    secret = tmp_path / "secret.data"
    os.replace(path.parent / "m.data", secret)
    if how == "dotdot":
        _relocate(path, "../secret.data")
    elif how == "absolute":
        _relocate(path, str(secret))
    else:
        (path.parent / "m.data").symlink_to(secret)
    with pytest.raises(ModelLoadError, match="outside the model's folder|absolute path"):
        load_onnx_model(_handle(path))
    with pytest.raises(ModelLoadError):  # also when only the graph is wanted (pre-flight checks)
        load_onnx_model(_handle(path), load_external=False)


def test_matches_any_by_name_glob_or_parent():
    assert matches_any("encoder.0.fc", ["encoder"])
    assert matches_any("encoder.0.fc", ["*.fc"])
    assert matches_any("head", ["head"])
    assert not matches_any("encoder2.fc", ["encoder"])
    assert not matches_any("head", [])


def test_selection_problems_on_a_spec_archive(make_tiny_mlp):
    from slimline.core.models import open_model

    path, _ = make_tiny_mlp()
    h = open_model(path)
    none, every = Problem("none"), Problem("every", field="skip")
    linear = {"Linear"}
    assert selection_problems(h, linear, [], none_found=none, all_excluded=every) == []
    assert selection_problems(h, {"Conv2d"}, [], none_found=none, all_excluded=every) == [none]
    assert selection_problems(h, linear, ["0", "2"], none_found=none, all_excluded=every) == [every]
    assert selection_problems(h, linear, ["0"], none_found=none, all_excluded=every) == []
    # keep_last: the output layer ("2") does not count, so skipping "0" leaves nothing
    assert selection_problems(h, linear, ["0"], none_found=none, all_excluded=every, keep_last=True) == [every]
    built = selection_problems(h, {"Conv2d"}, [], none_found=lambda layers: Problem(f"{len(layers)} layers"),
                               all_excluded=every)
    assert built == [Problem("3 layers")]
    onnx_like = ModelHandle(path="x.onnx", format="onnx", family="onnx")
    assert selection_problems(onnx_like, linear, ["*"], none_found=none, all_excluded=every) == []
