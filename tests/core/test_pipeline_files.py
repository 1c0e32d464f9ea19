"""Pipeline files: round trip, validation naming step and field, migration, placeholders."""
import json
from pathlib import Path

import pytest

from slimline.core.errors import PipelineError
from slimline.core.pipeline import Pipeline, StepSpec, load_pipeline, parse_pipeline, save_pipeline

FIXTURES = Path(__file__).parent / "fixtures"


def test_round_trip_is_stable(tmp_path):
    pipe = load_pipeline(FIXTURES / "pipeline_v1.json")
    out = tmp_path / "p.json"
    save_pipeline(pipe, out)
    again = load_pipeline(out)
    assert again.model_dump() == pipe.model_dump()
    assert json.loads(out.read_text())["steps"][0]["params"] == {"opset": 17, "exporter": "legacy"}


def test_v0_file_migrates_and_keeps_unknown_plugin_as_placeholder():
    pipe = load_pipeline(FIXTURES / "pipeline_v0.json")
    assert pipe.schema_version == 1
    assert [s.plugin for s in pipe.steps] == ["builtin.convert_onnx", "builtin.some_future_plugin"]
    unknown = pipe.steps[1]
    assert unknown.enabled is False and "not installed" in unknown.placeholder_reason
    assert unknown.params == {"x": 1}  # kept for when the plugin is installed again
    assert [s.id for s in pipe.enabled_steps()] == ["s1"]


def test_future_schema_is_refused_with_upgrade_hint():
    with pytest.raises(PipelineError) as e:
        parse_pipeline({"format": "slimline.pipeline", "schema_version": 99, "steps": []})
    assert "newer Slimline" in str(e.value) and "update" in e.value.hint


@pytest.mark.parametrize("doc, needle", [
    ({"steps": [{"id": "s1", "plugin": "builtin.convert_onnx", "params": {"opset": 3}}]}, "step s1"),
    ({"steps": [{"id": "s1", "plugin": "builtin.convert_onnx", "params": {"opset": "x"}}]}, "opset"),
    ({"steps": [{"id": "s1", "plugin": "builtin.convert_onnx", "params": {"bogus": 1}}]}, "bogus"),
    ({"steps": [{"id": "a", "plugin": "builtin.convert_onnx"}, {"id": "a", "plugin": "builtin.convert_onnx"}]},
     "duplicate"),
    ({"schema_version": 1, "steps": [{"plugin": "builtin.convert_onnx"}]}, "id"),
    ({"steps": ["just a string"]}, "steps"),
    ({"steps": "nope"}, "steps"),
    ([1, 2], "JSON object"),
    ({"format": "something.else"}, "format"),
    ({"schema_version": "1"}, "schema_version"),
])
def test_invalid_documents_name_the_problem(doc, needle):
    with pytest.raises(PipelineError) as e:
        parse_pipeline(doc)
    assert needle in str(e.value)


def test_broken_json_names_line(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"steps": [}')
    with pytest.raises(PipelineError) as e:
        load_pipeline(p)
    assert "line 1" in str(e.value) and str(p) in str(e.value)


def test_new_step_ids_are_unique():
    pipe = Pipeline(steps=[StepSpec(id="s1", plugin="x"), StepSpec(id="s3", plugin="y")])
    assert pipe.new_step_id() == "s2"


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "p.json"
    target.write_text("original")
    import slimline.core.fsutil as fsutil

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(fsutil.os, "replace", boom)
    with pytest.raises(OSError):
        save_pipeline(Pipeline(), target)
    assert target.read_text() == "original"
    assert list(tmp_path.iterdir()) == [target]


def test_demo_pipeline_chain_is_clean_and_mismatch_suggests_conversion():
    from slimline.core.demo import demo_paths
    from slimline.core.models import open_model
    from slimline.core.pipeline import check_chain

    paths = demo_paths()
    model = open_model(paths["torch"])
    pipe = load_pipeline(paths["pipeline"])
    assert [p for _, p in check_chain(pipe, model) if p.severity == "error"] == []
    bad = parse_pipeline({"schema_version": 1, "steps": [
        {"id": "q", "plugin": "builtin.quantize_dynamic"}]})
    (sid, problem), = check_chain(bad, model)
    assert sid == "q" and "Convert to ONNX" in problem.fix
