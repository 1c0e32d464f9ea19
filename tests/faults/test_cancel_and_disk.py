"""Cancel at seeded random points of a pipeline and of an export; disk full while writing.

Every time: no partial files, the step cache stays consistent, a re-run gives the same files
(byte-identical hashes for the deterministic steps), and a failed write names the folder.
"""
from __future__ import annotations

import errno
import hashlib
import random
from pathlib import Path

import pytest
from fault_helpers import cache_is_consistent, snapshot

from slimline.core.errors import Cancelled, SlimlineError
from slimline.core.history import load_run, run_dir
from slimline.core.jobs import start_pipeline_job
from slimline.core.pipeline import parse_pipeline
from slimline.core.plugin import CancelToken

STEPS = [{"id": "s1", "plugin": "builtin.convert_onnx", "params": {"exporter": "legacy", "opset": 17}},
         {"id": "s2", "plugin": "builtin.prune_magnitude", "params": {"sparsity": 0.5}},
         {"id": "s3", "plugin": "faults.sleepy", "params": {"seconds": 0.5}}]
EVAL = {"latency": {"batch_sizes": [1], "runs": 3, "warmup": 1, "threads": 1}}


def _pipe():
    return parse_pipeline({"format": "slimline.pipeline", "schema_version": 1, "name": "cancel",
                           "steps": STEPS, "evaluation": EVAL})


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _outputs(events) -> dict[str, str]:
    """step id → sha256 of every file of its output model (cache paths differ per workspace)."""
    out = {}
    for e in events:
        if e.type == "step_result" and e.result.step_id != "original":
            files = e.result.model.files or [e.result.model.path]
            out[e.result.step_id] = "|".join(sorted(_sha(f) for f in files))
    return out


def _no_partials(ws: Path) -> list[str]:
    return [str(p) for p in ws.rglob("*") if p.name.endswith(".tmp") or p.name == "partial.bin"
            or p.name.startswith(".tmp-") or p.name.startswith(".quantize-")]


def test_cancel_pipeline_at_random_points_then_rerun_gives_the_same_files(tiny, tmp_path, fault_plugins):
    model, data = tiny
    reference = start_pipeline_job(_pipe(), model, data_path=str(data), workspace=tmp_path / "ref").wait(180)
    assert reference[-1].type == "done", reference[-1]
    want = _outputs(reference)
    assert set(want) == {"s1", "s2", "s3"}

    ws = tmp_path / "ws"
    # seeded "random" points: cancel right after the k-th event of the run (progress, step start/result…),
    # chosen among the events the reference run produced, so the points spread over all steps
    rng = random.Random(6)
    points = sorted(rng.sample(range(2, len(reference) - 1), k=3))
    outcomes = []
    for k in points:
        job = start_pipeline_job(_pipe(), model, data_path=str(data), workspace=ws, use_cache=False)
        events = []
        while job.alive and len(events) < k:
            events += job.poll(timeout=0.05, max_events=k - len(events))
        job.cancel()
        events += job.wait(timeout=60)
        final = events[-1].type
        assert final in ("cancelled", "done"), events[-1]
        outcomes.append((k, final, [e.result.step_id for e in events if e.type == "step_result"]))
        assert cache_is_consistent(ws / "cache") == [], outcomes
        assert _no_partials(ws) == [], _no_partials(ws)
        status = load_run(run_dir(ws, job.run_id)).status
        assert status == ("cancelled" if final == "cancelled" else "done")
    assert any(o[1] == "cancelled" for o in outcomes), outcomes
    again = start_pipeline_job(_pipe(), model, data_path=str(data), workspace=ws).wait(180)
    assert again[-1].type == "done", again[-1]
    assert _outputs(again) == want, "a re-run after cancels must give byte-identical step outputs"
    assert cache_is_consistent(ws / "cache") == []


def _export_once(handle, out: Path, data: Path, cancel_at: int | None):
    """Export to ONNX (+ external data file), cancelling at the ``cancel_at``-th progress report."""
    from slimline.core.export.formats import export_model

    token, calls = CancelToken(), []

    def progress(fraction: float, message: str) -> None:
        calls.append(message)
        if cancel_at is not None and len(calls) == cancel_at:
            token.cancel()
    rec = export_model(handle, "onnx", out, data=data, cancel=token, progress=progress, name="m",
                       external_data=True)
    return rec, calls


def test_cancel_export_at_random_points(tiny, tmp_path):
    from slimline.core.models import open_model

    model, data = tiny
    handle = open_model(model)
    rec, calls = _export_once(handle, tmp_path / "ref", data, None)
    want = {Path(f.path).name: _sha(f.path) for f in rec.files}
    assert set(want) == {"m.onnx", "m.data"}
    rng = random.Random(7)
    # every report before the final "moving the verified files into place" / "done" (after which
    # the export is complete and a cancel has nothing left to stop)
    last = next(i for i, m in enumerate(calls, 1) if m.startswith("moving"))
    points = sorted(rng.sample(range(1, last), k=min(4, last - 1)))
    out = tmp_path / "out"
    for k in points:
        try:
            _export_once(handle, out, data, k)
        except Cancelled:
            pass
        else:
            raise AssertionError(f"cancel at progress report {k}/{len(calls)} was ignored")
        assert not out.exists() or list(out.iterdir()) == [], (k, list(out.iterdir()))
    rec, _ = _export_once(handle, out, data, None)
    assert {Path(f.path).name: _sha(f.path) for f in rec.files} == want, "re-export differs"


def _enospc_on(call: int, inside: Path):
    """os.replace that fails with ENOSPC on its ``call``-th use for a destination under ``inside``."""
    import os

    real = os.replace
    n = {"calls": 0}

    def replace(src, dst, *a, **k):
        if Path(dst).resolve().is_relative_to(inside.resolve()) and not Path(dst).name.endswith(".json"):
            n["calls"] += 1
            if n["calls"] == call:
                raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, *a, **k)
    return replace


@pytest.mark.parametrize("failing_call", [1, 2])
def test_disk_full_during_export_leaves_nothing_and_names_the_folder(tiny, tmp_path, monkeypatch, failing_call):
    """The second file of a two-file export fails: the first must not stay behind either."""
    import slimline.core.export.staging as staging
    from slimline.core.models import open_model

    model, data = tiny
    handle = open_model(model)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("the user's file")
    before = snapshot(tmp_path)
    monkeypatch.setattr(staging.os, "replace", _enospc_on(failing_call, out))
    with pytest.raises(SlimlineError) as ei:
        _export_once(handle, out, data, None)
    err = ei.value
    assert str(out) in str(err) and "space" in str(err).lower() and err.hint, str(err)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"], "half an export was left behind"
    assert snapshot(tmp_path).keys() == before.keys()


def test_disk_full_while_a_step_commits_names_the_folder(tiny, tmp_path, monkeypatch):
    """Inline run: the cache commit of a step's output fails with ENOSPC."""
    import slimline.core.cache as cache_mod
    from slimline.core.models import open_model
    from slimline.core.runner import run_pipeline

    model, data = tiny
    ws = tmp_path / "ws"
    pipe = parse_pipeline({"format": "slimline.pipeline", "schema_version": 1, "name": "full",
                           "steps": STEPS[:1], "evaluation": EVAL})
    monkeypatch.setattr(cache_mod.os, "replace", _enospc_on(1, ws / "cache"))
    events = []
    with pytest.raises(SlimlineError) as ei:
        run_pipeline(pipe, open_model(model), workspace=ws, emit=events.append, threads=1)
    err = ei.value
    assert str(ws / "cache") in str(err) and "space" in str(err).lower() and err.hint, str(err)
    assert getattr(err, "step_id", "") == "s1"
    assert cache_is_consistent(ws / "cache") == [] and _no_partials(ws) == []
    rec = [load_run(p) for p in (ws / "runs").glob("*/run.json")][0]
    assert rec.status == "failed" and "space" in rec.error.message.lower()
