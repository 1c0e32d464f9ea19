"""Autosave: killed mid-pipeline (SIGKILL), the next start offers to restore the workspace,
losing at most the step that was running."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from slimline.core import autosave
from slimline.core.autosave import WorkspaceState, mark_clean_shutdown, pending_restore, restore_runs, save_state

CHILD = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    from slimline.core.autosave import WorkspaceState, save_state
    from slimline.core.models import open_model
    from slimline.core.pipeline import parse_pipeline
    from slimline.core.runner import load_data, run_pipeline
    from slimline.core.history import new_run_id

    ws, model_path, data_path, doc_path = sys.argv[1:5]
    doc = json.loads(Path(doc_path).read_text())
    pipe = parse_pipeline(doc)
    model = open_model(model_path)
    state = WorkspaceState(model_path=model_path, pipeline=doc, data_path=data_path, pipeline_modified=True)
    save_state(ws, state)                      # the session is open
    rid = new_run_id()

    def emit(ev):
        if ev.type == "step_started":
            state.running_run_id = rid
            save_state(ws, state)
            if ev.step_id == "s3":
                print("IN s3", flush=True)
        elif ev.type == "step_result":
            save_state(ws, state)

    run_pipeline(pipe, model, workspace=Path(ws), emit=emit, data=load_data(pipe, model, data_path, None),
                 run_id=rid, threads=1)
    print("FINISHED", flush=True)
''')


def test_sigkill_mid_pipeline_offers_restore_losing_only_the_running_step(tiny, tmp_path, fault_plugins):
    model, data = tiny
    ws = tmp_path / "ws"
    doc = {"format": "slimline.pipeline", "schema_version": 1, "name": "autosave",
           "steps": [{"id": "s1", "plugin": "faults.sleepy", "params": {"seconds": 0}},
                     {"id": "s2", "plugin": "faults.sleepy", "params": {"seconds": 0.1}},
                     {"id": "s3", "plugin": "faults.sleepy", "params": {"seconds": 120}}],
           "evaluation": {"latency": {"batch_sizes": [1], "runs": 3, "warmup": 1, "threads": 1}}}
    doc_path = tmp_path / "pipe.json"
    doc_path.write_text(json.dumps(doc))
    assert pending_restore(ws) is None
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(ws), str(model), str(data), str(doc_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "IN s3" not in line and time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line and p.poll() is not None:
                raise AssertionError(p.stderr.read()[-3000:])
        assert "IN s3" in line
        time.sleep(0.3)  # well inside the running step
        os.kill(p.pid, signal.SIGKILL)
        assert p.wait(timeout=10) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
    restore = pending_restore(ws)
    assert restore is not None, "an unclean end must offer a restore"
    st = restore.state
    assert st.model_path == str(model) and st.data_path == str(data) and st.pipeline == doc
    assert st.pipeline_modified is True and st.running_run_id
    assert "did not close normally" in restore.describe() and "3 steps" in restore.describe()
    runs = restore_runs(ws, st)
    assert len(runs) == 1
    run = runs[0]
    assert run.status == "interrupted"
    assert [r.step_id for r in run.results] == ["original", "s1", "s2"], "all finished steps are kept"
    from slimline.core.cache import StepCache  # the killed process's work dir is swept like a crashed job's

    StepCache(ws / "cache").clean_temp(p.pid)
    assert not list((ws / "cache").glob(".tmp-*"))
    # the user restores (or declines) and later quits normally: no restore offered again
    mark_clean_shutdown(ws)
    assert pending_restore(ws) is None


def test_clean_shutdown_live_writer_and_damaged_files(tmp_path):
    ws = tmp_path / "ws"
    state = WorkspaceState(model_path="/m.onnx", run_ids=["r1"], dims={"batch": 2})
    save_state(ws, state)
    doc = json.loads(autosave.autosave_path(ws).read_text())
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:  # written by another process that is still running: another window, not a crash
        doc["pid"] = other.pid
        autosave.autosave_path(ws).write_text(json.dumps(doc))
        assert pending_restore(ws) is None
    finally:
        other.kill()
        other.wait()
    autosave.autosave_path(ws).write_text(json.dumps(doc))  # now that process is gone
    r = pending_restore(ws)
    assert r is not None and r.state.dims == {"batch": 2} and r.state.run_ids == ["r1"]
    assert restore_runs(ws, r.state) == []  # missing run records are skipped
    mark_clean_shutdown(ws)
    assert pending_restore(ws) is None
    assert json.loads(autosave.autosave_path(ws).read_text())["state"]["model_path"] == "/m.onnx"
    for garbage in (b"", b"{not json", b"[" * 100000, b'{"format": "other", "state": {}}',
                    json.dumps({"format": autosave.FORMAT, "pid": 1, "state": {"run_ids": 5, "bogus": 1}}).encode()):
        autosave.autosave_path(ws).write_bytes(garbage)
        r = pending_restore(ws)
        assert r is None or r.state.run_ids == []
    autosave.discard(ws)
    assert not autosave.autosave_path(ws).exists()


def test_save_is_atomic_when_the_disk_fails(tmp_path, monkeypatch):
    import errno

    import slimline.core.fsutil as fsutil

    ws = tmp_path / "ws"
    save_state(ws, WorkspaceState(model_path="/old.onnx"))
    before = autosave.autosave_path(ws).read_bytes()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(fsutil.os, "replace", full)
    with pytest.raises(OSError):
        save_state(ws, WorkspaceState(model_path="/new.onnx"))
    assert autosave.autosave_path(ws).read_bytes() == before
    assert sorted(p.name for p in ws.iterdir()) == ["autosave.json"], "no temp file left"
