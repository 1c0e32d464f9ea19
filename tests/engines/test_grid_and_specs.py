"""The engine layer without running anything: grids checked against plugin Params, specs, file units, remap."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slimline.core.engines import GridError, VariantSpec, expand, get_engine, parse_grid, parse_settings
from slimline.core.engines.errors import EngineError
from slimline.core.engines.grid import parse_assignment
from slimline.core.engines.ray_engine import remap
from slimline.core.engines.transfer import materialize, put_shared, read_shared, unit_of_path
from slimline.core.pipeline import parse_pipeline

ROOT = Path(__file__).resolve().parents[2]


def _pipeline():
    return parse_pipeline({"format": "slimline.pipeline", "schema_version": 1, "name": "p", "steps": [
        {"id": "s1", "plugin": "builtin.prune_magnitude", "params": {"sparsity": 0.5}},
        {"id": "s2", "plugin": "builtin.convert_onnx", "params": {}},
        {"id": "s3", "plugin": "builtin.quantize_static", "params": {}, "enabled": False}]})


def test_grid_values_are_parsed_and_validated_by_the_plugin():
    axes = parse_grid(_pipeline(), ["s1.sparsity=0.25, 0.5", "s1.scope=layer,global", "s2.dynamic_batch=true,false"])
    assert [(a.key, a.values) for a in axes] == [("s1.sparsity", (0.25, 0.5)), ("s1.scope", ("layer", "global")),
                                                 ("s2.dynamic_batch", (True, False))]
    assert parse_assignment('s1.skip=[[], ["fc", "conv"]]') == ("s1.skip", [[], ["fc", "conv"]])


@pytest.mark.parametrize(("entry", "says"), [
    ("s1.sparsity=0.3,1.5", "s1.sparsity=1.5: Input should be less than or equal to 0.99; allowed: >= 0.0, <= 0.99"),
    ("s1.scope=layer,everywhere", "s1.scope=\"everywhere\": Input should be 'layer' or 'global'"),
    ("s1.ratio=0.3", "step s1 (builtin.prune_magnitude) has no parameter 'ratio'"),
    ("s9.sparsity=0.3", "the pipeline has no step 's9'"),
    ("s3.per_channel=true", "step s3 is disabled"),
    ("sparsity=0.3", "must look like STEP.PARAM=V1,V2"),
    ("s1.sparsity=0.3,0.3", "lists the same value twice"),
])
def test_bad_grid_entries_name_step_param_and_what_is_allowed(entry, says):
    with pytest.raises(GridError) as err:
        parse_grid(_pipeline(), [entry])
    assert says in str(err.value)


def test_expand_makes_every_combination_with_labels_and_keeps_fixed_settings():
    pipe = _pipeline()
    fixed = parse_settings(pipe, ["s2.opset=17"])
    base = VariantSpec(pipeline=pipe, model_path="m.onnx").with_settings(fixed)
    specs = expand(base.model_copy(update={"settings": {}}),
                   parse_grid(pipe, ["s1.sparsity=0.25,0.5,0.75", "s1.scope=layer,global"]))
    assert len(specs) == 6
    assert [s.title for s in specs[:2]] == ["s1.sparsity=0.25 s1.scope=layer", "s1.sparsity=0.25 s1.scope=global"]
    steps = {s.id: s.params for s in specs[5].pipeline.steps}
    assert steps["s1"] == {"sparsity": 0.75, "scope": "global"} and steps["s2"] == {"opset": 17}
    run = specs[5].resolved_pipeline()
    assert run.name == "p [s1.sparsity=0.75 s1.scope=global]"
    assert specs[0].pipeline.steps[0].params == {"sparsity": 0.25, "scope": "layer"}  # copies, not shared
    with pytest.raises(GridError, match="exactly one value"):
        parse_settings(pipe, ["s2.opset=17,18"])


def test_evaluation_overrides_merge_into_the_pipeline_and_are_checked():
    spec = VariantSpec(pipeline=_pipeline(), model_path="m", evaluation={"max_rows": 64, "latency": {"runs": 3}})
    ev = spec.resolved_pipeline().evaluation
    assert ev.max_rows == 64 and ev.latency.runs == 3 and ev.latency.warmup == 10
    job = spec.job_spec(workspace="/w", run_id="r1", threads=2)
    assert job["threads"] == 2 and job["pipeline"]["evaluation"]["max_rows"] == 64 and job["run_id"] == "r1"


def test_unknown_engine_and_missing_ray_say_what_to_do(monkeypatch):
    import importlib.util

    with pytest.raises(EngineError, match="unknown engine 'spark'"):
        get_engine("spark")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(EngineError) as err:
        get_engine("ray")
    assert "pip install slimline[ray]" in str(err.value)
    with pytest.raises(EngineError, match="options of the Ray engine"):
        get_engine("local", address="10.0.0.1:6379")


def test_file_units_travel_by_hash_and_materialize_once(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.onnx").write_bytes(b"graph")
    (src / "model.onnx.data").write_bytes(b"weights" * 100)
    unit, sources, root = unit_of_path(src / "model.onnx", [src / "model.onnx.data"])
    assert root == src.resolve() and unit.main == "model.onnx" and len(unit.files) == 2
    shared = tmp_path / "shared"
    put_shared(shared, sources)
    node = tmp_path / "node"
    folder = materialize(unit, node, read_shared(shared))
    assert (folder / "model.onnx.data").read_bytes() == b"weights" * 100
    assert materialize(unit, node, lambda d: pytest.fail("fetched again")) == folder  # built once per node
    bad = unit.model_copy(update={"files": [unit.files[0].model_copy(update={"sha256": "0" * 64})]})
    with pytest.raises(OSError, match="do not match"):
        materialize(bad, node, lambda d: b"graph")
    folder_unit, _, froot = unit_of_path(src)
    assert froot == tmp_path.resolve() and folder_unit.main == "src"


def test_remap_rewrites_path_prefixes_only_on_boundaries():
    doc = {"a": "/node/units/k1/m.onnx", "b": ["/node/units/k10/x"], "c": "/node/ws/cache/1/y", "n": 3}
    out = remap(doc, [("/node/units/k1", "/home/u"), ("/node/ws", "/ws/runs/r/files")])
    assert out == {"a": "/home/u/m.onnx", "b": ["/node/units/k10/x"], "c": "/ws/runs/r/files/cache/1/y", "n": 3}


def test_cli_refuses_a_bad_grid_before_starting_anything(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "slimline.core.cli", "sweep", "--demo", "--grid",
                           "s1.pruning_ratio=0.25,1.5", "--workspace", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "--grid s1.pruning_ratio: s1.pruning_ratio=1.5: Input should be less than or equal to 0.95" in proc.stderr
    assert not (tmp_path / "runs").exists() and proc.stdout == ""


def test_the_engine_layer_and_sweep_cli_import_neither_ray_nor_torch():
    code = ("import sys, json\nimport slimline.core.engines, slimline.core.engines.sweep, slimline.core.engines.local, "
            "slimline.core.engines.ray_engine, slimline.core.engines.ray_worker, slimline.core.sweep_cli\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    mods = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not {"ray", "torch", "onnxruntime", "PySide6"} & mods


def test_an_unreachable_ray_address_fails_at_once_with_what_to_check(tmp_path):
    import time

    pytest.importorskip("ray")
    from sweep_helpers import demo_request

    from slimline.core.engines.sweep import build_specs

    specs = build_specs(demo_request(tmp_path, "ray", grid=["s1.sparsity=0.3"]))[2]
    t0 = time.monotonic()
    with pytest.raises(EngineError) as err:
        get_engine("ray", address="127.0.0.1:1").map(specs, workspace=tmp_path)
    assert time.monotonic() - t0 < 15
    assert "nothing answers at 127.0.0.1:1" in err.value.message and "ray start --head" in err.value.hint
