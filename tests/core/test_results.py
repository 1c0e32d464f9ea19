"""Typed results: run.json round trip, the v1 → v2 migration, events across the pipe, unchanged CLI output."""
import io
import json
from pathlib import Path

import pytest

from slimline.core.history import list_runs, load_run, save_run
from slimline.core.render import print_run, result_rows
from slimline.core.results import (
    RUN_SCHEMA_VERSION,
    CancelledEvent,
    FailedEvent,
    LogEvent,
    RunRecord,
    StepResult,
    StepResultEvent,
    event_from_dict,
    event_to_dict,
    migrate_run,
    run_from_dict,
)

FIXTURES = Path(__file__).parent / "fixtures"
V1 = FIXTURES / "run_v1_demo.json"  # `slimline run --demo` on the code before schema_version, trimmed


def _v1() -> dict:
    return json.loads(V1.read_text())


def test_migration_is_pure_and_adds_only_the_version():
    doc = _v1()
    assert "schema_version" not in doc
    before = json.dumps(doc, sort_keys=True)
    out = migrate_run(doc)
    assert json.dumps(doc, sort_keys=True) == before  # the input is untouched
    assert out["schema_version"] == RUN_SCHEMA_VERSION == 2
    assert {k: v for k, v in out.items() if k != "schema_version"} == doc


def test_migration_drops_raw_reference_outputs_and_fills_missing_keys():
    doc = {"run_id": "r1", "status": "running", "results": [{"step_id": "original", "reference_outputs": [1, 2]}]}
    out = migrate_run(doc)
    assert out["data"] == {"eval": None, "train": None} and out["error"] is None
    assert "reference_outputs" not in out["results"][0] and "reference_outputs" in doc["results"][0]


def test_newer_or_odd_versions_are_refused():
    with pytest.raises(ValueError, match="newer"):
        migrate_run({**_v1(), "schema_version": RUN_SCHEMA_VERSION + 1})
    with pytest.raises(ValueError):
        migrate_run({**_v1(), "schema_version": "two"})


def test_old_run_loads_typed_and_writes_back_the_same_json_plus_version(tmp_path):
    record = load_run(V1)
    assert isinstance(record, RunRecord) and record.schema_version == 2 and record.status == "done"
    assert [r.step_id for r in record.results] == ["original", "s1", "s3"]
    s1 = record.step("s1")
    assert s1.flags == ["over_budget"] and s1.accuracy.n == 449 and s1.latency["64"].batch == 64
    assert record.results[0].tables is None and "tables" not in record.results[0].to_dict()
    path = save_run(tmp_path, record)
    written = json.loads(path.read_text())
    assert written["schema_version"] == 2
    assert {k: v for k, v in written.items() if k != "schema_version"} == _v1()


def test_round_trip_run_record_json_model(tmp_path):
    record = load_run(V1)
    again = run_from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record
    save_run(tmp_path, record)
    assert list_runs(tmp_path) == [record]


def test_unknown_keys_survive_and_bad_records_are_value_errors(tmp_path):
    doc = {**_v1(), "schema_version": 2, "added_later": {"x": 1}}
    assert run_from_dict(doc).to_dict()["added_later"] == {"x": 1}
    bad = {**_v1(), "status": "exploded"}
    with pytest.raises(ValueError):
        run_from_dict(bad)
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "run.json").write_text(json.dumps(bad))
    assert list_runs(tmp_path) == []  # skipped, not a crash


def test_print_run_output_is_unchanged():
    """The table the CLI prints for a run, as the pre-typed code printed it for the same record."""
    expected = (FIXTURES / "run_v1_demo.print_run.txt").read_text()
    for record in (load_run(V1), _v1()):
        buf = io.StringIO()
        print_run(record, out=buf)
        assert buf.getvalue() == expected
    _, rows = result_rows(_v1())
    assert rows[1][-1] == "over_budget" and "0.25×" in rows[1][1]


def test_records_are_read_by_attribute_not_as_dicts():
    """No dict view: a consumer indexing a record like the old dicts fails loudly, and to_dict is the JSON form."""
    record = load_run(V1)
    assert record.status == "done" and record.final_model is not None and record.final_model.format == "onnx"
    with pytest.raises(TypeError):
        record["status"]  # noqa: B018
    assert not hasattr(record, "get") and not hasattr(record.results[1], "keys")
    doc = record.to_dict()
    assert doc["results"][1]["size"]["bytes_on_disk"] == record.results[1].size.bytes_on_disk


def test_events_cross_the_pipe_as_the_old_dicts():
    result = load_run(V1).results[1]
    docs = [
        {"type": "progress", "overall": 0.5, "step_id": "s1", "fraction": 0.2, "message": "m"},
        {"type": "step_started", "step_id": "s1", "index": 1, "total": 3, "title": "Prune"},
        {"type": "step_result", "result": result.to_dict()},
        {"type": "log", "step_id": "s1", "message": "hello"},
        {"type": "log", "level": "warning", "message": "UserWarning: x"},
        {"type": "metric", "step_id": "s1", "kind": "loss", "payload": {"step": 1, "loss": 0.5}},
        {"type": "done", "run": {"run_id": "r", "status": "done"}},
        {"type": "failed", "message": "m", "hint": "h", "subject": "s", "step_id": "", "details": "tb"},
        {"type": "failed", "message": "crash", "hint": "h", "subject": "worker", "step_id": ""},
        {"type": "cancelled"},
        {"type": "cancelled", "forced": True},
    ]
    for doc in docs:
        ev = event_from_dict(doc)
        assert event_to_dict(ev) == doc, doc
    assert isinstance(event_from_dict(docs[2]), StepResultEvent)
    assert isinstance(event_from_dict(docs[2]).result, StepResult)
    assert event_to_dict(LogEvent(message="x")) == {"type": "log", "message": "x"}
    assert isinstance(event_from_dict(docs[-1]), CancelledEvent)
    assert isinstance(event_from_dict(docs[7]), FailedEvent)
    with pytest.raises(ValueError):
        event_from_dict({"type": "nonsense"})
