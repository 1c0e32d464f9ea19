"""Steps layer by layer: per-layer parameters in the plugins and their Layerwise views (search building blocks)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from layered_models import NODES, save_mlp
from onnx import numpy_helper
from pydantic import ValidationError

from slimline.core.data import DataBundle
from slimline.core.models import open_model
from slimline.core.plugin import CancelToken, StepContext
from slimline.core.registry import get_plugin
from slimline.core.sensitivity.protocol import KEEP, Layerwise, exclusion_field, with_excluded


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, DataBundle]:
    handle, data = save_mlp(tmp_path_factory.mktemp("mlp"))
    model = open_model(handle.path)
    return model, DataBundle.from_paths(eval=data, model=model)


def _ctx(tmp: Path, data: DataBundle | None = None) -> StepContext:
    return StepContext(work_dir=tmp / "step", data=data, threads=1, cancel=CancelToken())


def _sparsity(path: str) -> dict[str, float]:
    m = onnx.load(path)
    return {i.name: float((numpy_helper.to_array(i) == 0).mean()) for i in m.graph.initializer}


def test_magnitude_overrides_prune_each_layer_to_its_own_sparsity(mlp, tmp_path: Path) -> None:
    model, _ = mlp
    cls = get_plugin("builtin.prune_magnitude")
    params = cls.Params(sparsity=0.0, overrides={"fc2": 0.9, "fc4.weight": 0.5})
    out = cls().run(model, params, _ctx(tmp_path))
    sp = _sparsity(out.model.path)
    assert sp["fc2.weight"] == pytest.approx(0.9, abs=1 / 384) and sp["fc4.weight"] == pytest.approx(0.5)
    assert sp["fc1.weight"] == 0.0 and sp["fc3.weight"] == 0.0
    with pytest.raises(ValidationError, match="per-layer sparsity needs pattern"):
        cls.Params(pattern="n:m", overrides={"fc2": 0.5})
    with pytest.raises(ValidationError, match=r"sparsity must be in \[0, 0.99\]"):
        cls.Params(overrides={"fc2": 1.5})


def test_structured_overrides_set_one_layers_channel_ratio(make_tiny_mlp, tmp_path: Path) -> None:
    import torch

    path, _ = make_tiny_mlp(hidden=32)
    model = open_model(path)
    cls = get_plugin("builtin.prune_structured")
    out = cls().run(model, cls.Params(pruning_ratio=0.25, importance="magnitude", overrides={"0": 0.5}),
                    _ctx(tmp_path))
    from slimline.core.torchmodel import load_torch_module

    pruned = load_torch_module(out.model)
    assert isinstance(pruned[0], torch.nn.Linear) and pruned[0].out_features == 16   # 50 % of 32, not 25 %
    with pytest.raises(ValidationError):
        cls.Params(overrides={"0": 0.0})


def test_quantize_once_leaves_excluded_nodes_in_float(mlp, tmp_path: Path) -> None:
    model, data = mlp
    cls = get_plugin("builtin.quantize_dynamic")
    plugin, params = cls(), cls.Params(per_channel=False)
    prep, _ = plugin.prepare_graph(model, params, tmp_path / "prep.onnx")
    assert [n for n, _, _ in plugin.weight_nodes(prep, params)] == NODES
    plugin.quantize_once(prep, tmp_path / "q.onnx", params, _ctx(tmp_path, data), exclude=("fc2",))
    q = onnx.load(str(tmp_path / "q.onnx"))
    by_name = {n.name: n.op_type for n in q.graph.node}
    assert by_name["fc2"] == "MatMul"
    assert sum(op in ("MatMulInteger", "DynamicQuantizeMatMul") for op in by_name.values()) == 3


@pytest.mark.parametrize("step,field,levels", [
    ("builtin.quantize_dynamic", "nodes_to_exclude", ["int8"]),
    ("builtin.quantize_static", "nodes_to_exclude", ["int8"]),
    ("builtin.prune_magnitude", "skip", ["0.3", "0.5", "0.7", "0.9"]),
    ("builtin.lowrank", "skip", ["0.5", "0.25", "0.125"]),
])
def test_every_step_offers_the_layerwise_protocol(mlp, tmp_path: Path, step: str, field: str,
                                                  levels: list[str]) -> None:
    model, data = mlp
    cls = get_plugin(step)
    lw = cls().layerwise(model, cls.Params(), _ctx(tmp_path, data))
    try:
        assert isinstance(lw, Layerwise) and lw.exclusion_field == field == exclusion_field(cls)
        assert [lv.key for lv in lw.levels] == levels and lw.default_level in levels
        names = [ly.name for ly in lw.layers]
        assert names == (NODES[:3] if step == "builtin.lowrank" else NODES)  # low-rank keeps the output layer
        first = names[0]
        settings = {first: lw.levels[-1].key}
        params = cls.Params.model_validate(lw.params_for(settings))   # what the pipeline file would say
        built = lw.build(settings, tmp_path / "built")
        assert Path(built.path).is_file()
        assert lw.saved_bytes(first, lw.levels[-1].key) > 0 and lw.saved_bytes(first, KEEP) == 0
        cheap = lw.cheap_scores(data.eval, CancelToken())
        assert {(c.layer, c.level) for c in cheap} == {(n, lv.key) for n in names for lv in lw.levels}
        assert all(c.weight_error is not None and c.weight_error >= 0 for c in cheap)
        if field == "nodes_to_exclude":
            assert set(params.nodes_to_exclude) == set(names) - {first}
    finally:
        lw.close()


def test_with_excluded_writes_the_steps_own_list() -> None:
    q = get_plugin("builtin.quantize_static")
    doc = with_excluded(q, {"nodes_to_exclude": ["a"]}, ["b", "a"])
    assert doc["nodes_to_exclude"] == ["a", "b"] and doc["per_channel"] is True   # validated, defaults filled
    assert with_excluded(get_plugin("builtin.prune_structured"), {}, ["3"])["ignored_layers"] == ["3"]
    assert with_excluded(get_plugin("builtin.lowrank"), {"skip": []}, ["fc1"])["skip"] == ["fc1"]


def test_lowrank_layerwise_ranks_are_fractions_of_full_rank(mlp, tmp_path: Path) -> None:
    model, _ = mlp
    cls = get_plugin("builtin.lowrank")
    lw = cls().layerwise(model, cls.Params(), _ctx(tmp_path))
    doc = lw.params_for({"fc2": "0.25", "fc1": KEEP})
    assert doc["overrides"] == {"fc2": 2}              # min(8, 48) = 8 → a quarter is rank 2
    assert set(doc["skip"]) >= {"fc1", "fc3"}
    w = np.asarray(lw._weights["fc2"].matrix)
    assert np.linalg.matrix_rank(lw._apply(lw._weights["fc2"], "0.25"), tol=1e-4) == 2 and w.shape == (48, 8)


def test_structured_layerwise_on_a_torch_model(make_tiny_mlp, tmp_path: Path) -> None:
    from slimline.core.data import load_dataset
    from slimline.core.torchmodel import load_torch_module

    path, data = make_tiny_mlp(hidden=32)
    model = open_model(path)
    cls = get_plugin("builtin.prune_structured")
    lw = cls().layerwise(model, cls.Params(importance="magnitude"), _ctx(tmp_path))
    assert [ly.name for ly in lw.layers] == ["0"] and lw.exclusion_field == "ignored_layers"   # output layer kept
    assert lw.level_for(0.33).key == "0.33"
    built = load_torch_module(lw.build({"0": "0.75"}, tmp_path / "b"))
    assert built[0].out_features == 8 and built[2].in_features == 8
    cheap = lw.cheap_scores(load_dataset(data, model), CancelToken())
    errs = {c.level: c.output_error for c in cheap}
    assert errs["0.25"] is not None and errs["0.25"] < errs["0.5"] < errs["0.75"]   # more channels, more error


def test_exported_anonymous_weights_are_named_after_their_module() -> None:
    from onnx import helper

    from slimline.plugins._shared.layerwise import module_weights, tensor_name

    node = helper.make_node("MatMul", ["x", "val_142"], ["y"], name="node_MatMul_139")
    prop = node.metadata_props.add()
    prop.key, prop.value = "pkg.torch.onnx.name_scopes", "['', 'encoder', 'encoder.layer.0.output.dense', 'linear_5']"
    graph = helper.make_graph([node], "g", [], [])
    modules = module_weights(helper.make_model(graph))
    assert tensor_name("val_142", "node_MatMul_139", modules) == "encoder.layer.0.output.dense.weight"
    assert tensor_name("fc2.weight", "node_MatMul_139", modules) == "fc2.weight"   # a real name stays
    assert tensor_name("val_7", "other", modules) == "val_7"
