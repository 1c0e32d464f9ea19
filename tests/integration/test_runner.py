"""End to end: pipeline → child process → events, run history, cache, cancel, crash."""
from pathlib import Path

import pytest

from slimline.core.history import list_runs, load_run, run_dir
from slimline.core.jobs import start_pipeline_job
from slimline.core.pipeline import parse_pipeline
from slimline.core.results import DoneEvent, StepResultEvent

CONVERT = {"id": "s1", "plugin": "builtin.convert_onnx", "params": {"exporter": "legacy", "opset": 17}}
EVAL = {"latency": {"batch_sizes": [1], "runs": 5, "warmup": 2}}


def _pipeline(*steps):
    return parse_pipeline({"format": "slimline.pipeline", "schema_version": 1, "name": "t",
                           "steps": list(steps), "evaluation": EVAL})


def test_convert_pipeline_runs_in_child_and_records_results(tiny_torch_model, tmp_path):
    model, data = tiny_torch_model
    ws = tmp_path / "ws"
    job = start_pipeline_job(_pipeline(CONVERT), model, data_path=str(data), workspace=ws)
    events = job.wait(timeout=120)
    types = [e.type for e in events]
    assert types[-1] == "done", events[-1]
    results = [e.result for e in events if e.type == "step_result"]
    assert [r.step_id for r in results] == ["original", "s1"]
    onnx_step = results[1]
    assert onnx_step.model.format == "onnx" and Path(onnx_step.model.path).is_file()
    assert onnx_step.fidelity.mean_cosine > 0.9999
    assert onnx_step.accuracy.n == 40 and onnx_step.accuracy.top1 == 1.0
    lat = onnx_step.latency["1"]
    assert lat.runs >= 5 and lat.warmup == 2 and lat.p90_ms >= lat.p50_ms > 0  # ≥: blocks fill 0.3 s
    assert lat.vs_input.blocks >= 2 and lat.measured_at  # timed against the original, conditions kept
    record = load_run(run_dir(ws, job.run_id))
    assert record.status == "done" and len(record.results) == 2 and record.schema_version == 2
    streamed = [e.result for e in events if isinstance(e, StepResultEvent)]
    assert record.results == streamed  # the typed results that crossed the pipe are the recorded ones
    assert record.final_model == record.results[1].model
    assert [r.run_id for r in list_runs(ws)] == [job.run_id]
    assert isinstance(events[-1], DoneEvent) and events[-1].run.run_id == job.run_id


def test_rerun_uses_cache_and_edit_recomputes_from_edited_step(tiny_torch_model, tmp_path):
    model, data = tiny_torch_model
    ws = tmp_path / "ws"
    quant = {"id": "s2", "plugin": "builtin.prune_magnitude", "params": {"sparsity": 0.5}}
    first = start_pipeline_job(_pipeline(CONVERT, quant), model, data_path=str(data), workspace=ws).wait(120)
    assert first[-1].type == "done", first[-1]
    again = start_pipeline_job(_pipeline(CONVERT, quant), model, data_path=str(data), workspace=ws).wait(120)
    cached = {e.result.step_id: e.result.cached for e in again if e.type == "step_result"}
    assert cached == {"original": False, "s1": True, "s2": True}
    edited = dict(quant, params={"sparsity": 0.7})
    third = start_pipeline_job(_pipeline(CONVERT, edited), model, data_path=str(data), workspace=ws).wait(120)
    cached = {e.result.step_id: e.result.cached for e in third if e.type == "step_result"}
    assert cached == {"original": False, "s1": True, "s2": False}


def test_failure_names_the_step(tiny_torch_model, tmp_path):
    model, data = tiny_torch_model
    static = {"id": "q", "plugin": "builtin.quantize_static", "params": {}}  # needs ONNX, gets torch
    events = start_pipeline_job(_pipeline(static), model, data_path=str(data), workspace=tmp_path).wait(120)
    final = events[-1]
    assert final.type == "failed"
    assert final.step_id == "q" and "Convert to ONNX" in final.hint


CRASHER = '''
import os
from typing import ClassVar
from slimline.core.plugin import Plugin, PluginParams, StepOutput

class Crash(Plugin):
    id: ClassVar[str] = "test.crash"
    title: ClassVar[str] = "Crash"
    input_formats: ClassVar[tuple] = ("torch", "onnx")
    output_format: ClassVar[str] = "torch"

    def run(self, model, params, ctx):
        (ctx.work_dir / "partial.bin").write_bytes(b"x" * 100)
        os.abort()

class Slow(Plugin):
    id: ClassVar[str] = "test.slow"
    title: ClassVar[str] = "Slow"
    input_formats: ClassVar[tuple] = ("torch", "onnx")
    output_format: ClassVar[str] = "torch"

    def run(self, model, params, ctx):
        import time
        (ctx.work_dir / "partial.bin").write_bytes(b"x" * 100)
        ctx.progress(0.1, "started")
        time.sleep(60)  # ignores cancel: the runner must terminate it
        return StepOutput(model=model)
'''


@pytest.fixture
def test_plugins(extra_plugins):
    extra_plugins("slimline_test_plugins", CRASHER, "Crash", "Slow")


def test_worker_crash_is_reported_and_leaves_no_partial_files(tiny_torch_model, tmp_path, test_plugins):
    model, data = tiny_torch_model
    ws = tmp_path / "ws"
    job = start_pipeline_job(_pipeline({"id": "boom", "plugin": "test.crash"}), model, workspace=ws)
    events = job.wait(timeout=120)
    assert events[-1].type == "failed"
    assert "crashed" in events[-1].message and "SIGABRT" in events[-1].message
    assert not list((ws / "cache").glob(".tmp-*")), "partial work dir left behind"
    assert load_run(run_dir(ws, job.run_id)).status == "failed"


def test_cancel_terminates_a_step_that_ignores_it(tiny_torch_model, tmp_path, test_plugins):
    import time

    model, data = tiny_torch_model
    ws = tmp_path / "ws"
    job = start_pipeline_job(_pipeline({"id": "slow", "plugin": "test.slow"}), model, workspace=ws)
    seen = []
    while job.alive and not any(getattr(e, "message", None) == "started" for e in seen):
        seen += job.poll(timeout=0.1)
    t0 = time.monotonic()
    job.cancel()
    seen += job.wait(timeout=30)
    assert seen[-1].type == "cancelled"
    assert time.monotonic() - t0 < 3.0
    assert not list((ws / "cache").glob(".tmp-*"))
    assert load_run(run_dir(ws, job.run_id)).status == "cancelled"
