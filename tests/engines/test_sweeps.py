"""Sweeps for real: 6 demo variants on the local pool and on a two-node Ray cluster, same figures; faults; cancel."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_helpers import DEMO, demo_request

from slimline.core.history import list_runs
from slimline.core.plugin import CancelToken

ROOT = Path(__file__).resolve().parents[2]


def tensors_digest(path: str) -> str:
    """The model's tensors by content (safetensors writes its header keys in no fixed order)."""
    import hashlib

    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(path, framework="numpy") as f:
        for k in sorted(f.keys()):
            h.update(k.encode() + f.get_tensor(k).tobytes())
    return h.hexdigest()


def figures(outcome) -> dict:
    """What must agree between engines: everything measured except time (and zip bytes, which follow the
    header's key order), plus the final model's tensors."""
    final = outcome.final
    return {"status": outcome.status, "settings": outcome.settings,
            "steps": [r.step_id for r in outcome.record.results],
            "tensors": tensors_digest(final.model.path), "bytes": final.size.bytes_on_disk,
            "params": final.size.param_count,
            "top1": final.accuracy.top1, "n": final.accuracy.n, "cosine": final.fidelity.mean_cosine,
            "max_abs": final.fidelity.max_abs_error, "agree": final.fidelity.top1_agreement}


def same(a: dict, b: dict) -> list[str]:
    bad = []
    for k in a:
        x, y = a[k], b[k]
        ok = math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-7) if isinstance(x, float) else x == y
        if not ok:
            bad.append(f"{k}: {x!r} != {y!r}")
    return bad


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    from slimline.core.engines.sweep import run_sweep

    ws = tmp_path_factory.mktemp("ws-local")
    t0 = time.perf_counter()
    record = run_sweep(demo_request(ws, "local", workers=2))
    print(f"\nlocal engine, 6 variants, 2 workers: {time.perf_counter() - t0:.1f} s wall")
    return ws, record


def test_local_sweep_runs_every_variant_into_the_history(local_sweep):
    ws, record = local_sweep
    assert [o.status for o in record.outcomes] == ["done"] * 6, [o.reason for o in record.outcomes]
    assert [o.settings for o in record.outcomes][:2] == [{"s1.sparsity": 0.1, "s1.scope": "layer"},
                                                         {"s1.sparsity": 0.1, "s1.scope": "global"}]
    runs = {r.run_id: r for r in list_runs(ws)}
    assert {o.run_id for o in record.outcomes} == set(runs)
    assert all(runs[o.run_id].pipeline_name == f"demo sweep [{o.label}]" for o in record.outcomes)
    sparsities = [o.final.metrics.get("sparsity") for o in record.outcomes]
    assert all(s is not None for s in sparsities), record.outcomes[0].final.metrics
    assert sparsities[0] < sparsities[2] < sparsities[4]
    assert (ws / "sweeps" / f"{record.sweep_id}.json").is_file()
    assert len({o.worker for o in record.outcomes}) <= 2  # two worker processes, reused
    assert record.outcomes[0].final.accuracy.n == 96


def test_ray_sweep_on_a_two_node_cluster_gives_the_local_figures(local_sweep, ray_cluster, tmp_path):
    from slimline.core.engines.sweep import run_sweep

    spans: dict[int, list] = {}

    def on_event(ev):  # when each variant ran, and on which node
        if ev.kind == "started":
            spans[ev.index] = [ev.worker.split(" pid")[0], time.monotonic(), None]
        elif ev.kind == "finished" and ev.index in spans:
            spans[ev.index][2] = time.monotonic()

    t0 = time.perf_counter()
    record = run_sweep(demo_request(tmp_path, "ray", address=ray_cluster.address), on_event=on_event)
    wall = time.perf_counter() - t0
    local = local_sweep[1]
    print(f"\nray engine (2 nodes × 1 CPU, address {ray_cluster.address}), 6 variants: {wall:.1f} s wall; "
          f"local: {local.wall_s:.1f} s")
    assert [o.status for o in record.outcomes] == ["done"] * 6, [o.reason for o in record.outcomes]
    assert [o.label for o in record.outcomes] == [o.label for o in local.outcomes]
    for r, lo in zip(record.outcomes, local.outcomes):
        assert same(figures(lo), figures(r)) == [], r.label
    nodes = {o.worker.split(" pid")[0] for o in record.outcomes}
    assert len(nodes) == 2, nodes  # both nodes ran variants
    # each node has 1 CPU and each variant asks for 1: a node never ran two variants at once
    # (a task blocked in ray.get lends its CPU to another task: the worker must never block so)
    for node in nodes:
        runs = sorted((a, b) for n, a, b in spans.values() if n == node)
        overlaps = [(x, y) for x, y in zip(runs, runs[1:]) if y[0] < x[1] - 0.5]
        assert not overlaps, f"{node} ran variants side by side: {runs}"
    # the records landed here: models copied into the run folder, paths of this machine
    rec = record.outcomes[0].record
    assert rec.model.path == str(DEMO / "digits_cnn.safetensors") and rec.data.eval == str(DEMO / "digits_eval.npz")
    final_file = Path(rec.results[-1].model.path)
    assert final_file.is_file() and final_file.is_relative_to(tmp_path / "runs" / rec.run_id / "files")
    assert {r.run_id for r in list_runs(tmp_path)} == {o.run_id for o in record.outcomes}


def test_ray_sweep_through_a_shared_folder(ray_cluster, local_sweep, tmp_path):
    from slimline.core.engines.sweep import run_sweep

    shared = tmp_path / "shared"
    record = run_sweep(demo_request(tmp_path / "ws", "ray", grid=["s1.sparsity=0.1", "s1.scope=global"],
                                    address=ray_cluster.address, shared_dir=str(shared)))
    (o,) = record.outcomes
    assert o.status == "done", o.reason
    blobs = list((shared / "blobs").rglob("*"))
    # the model and the data went through the folder, and the pruned model came back through it
    assert len([b for b in blobs if b.is_file()]) == 3
    local = next(x for x in local_sweep[1].outcomes if x.label == o.label)
    assert same(figures(local), figures(o)) == []


def test_a_killed_ray_worker_fails_its_variant_and_the_others_complete(ray_cluster, tmp_path):
    from slimline.core.engines.sweep import run_sweep

    killed: list[int] = []

    def on_event(ev):
        # kill the worker of variant 2 once it is running (measuring the original model)
        if ev.index == 1 and ev.kind == "progress" and ev.pid and not killed and "original" in ev.message:
            os.kill(ev.pid, signal.SIGKILL)
            killed.append(ev.pid)

    record = run_sweep(demo_request(tmp_path, "ray", grid=["s1.sparsity=0.1,0.2,0.3"], address=ray_cluster.address),
                       on_event=on_event)
    statuses = [o.status for o in record.outcomes]
    print(f"\nfault test: killed pid {killed}; outcomes: " +
          "; ".join(f"{o.label}: {o.status} {o.reason}" for o in record.outcomes))
    assert killed and statuses == ["done", "failed", "done"], [(o.status, o.reason) for o in record.outcomes]
    failed = record.outcomes[1]
    assert "Ray worker running this variant died" in failed.reason and str(killed[0]) in failed.reason
    assert failed.hint
    runs = {r.run_id: r for r in list_runs(tmp_path)}
    assert runs[failed.run_id].status == "failed" and "died" in runs[failed.run_id].error.message


def test_cancel_stops_ray_tasks(ray_cluster, tmp_path):
    from slimline.core.engines.sweep import run_sweep

    cancel = CancelToken()

    def on_event(ev):
        if ev.kind == "progress" and "original" in ev.message:
            cancel.cancel()

    t0 = time.perf_counter()
    record = run_sweep(demo_request(tmp_path, "ray", address=ray_cluster.address), on_event=on_event, cancel=cancel)
    assert record.status == "cancelled" and time.perf_counter() - t0 < 45
    assert {o.status for o in record.outcomes} <= {"cancelled", "done"}
    assert sum(o.status == "cancelled" for o in record.outcomes) >= 4


def test_ctrl_c_cancels_a_local_sweep_cleanly(tmp_path):
    import psutil

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "slimline.core.cli", "sweep", "--demo", "--workspace", str(tmp_path),
                             "--grid", "s1.pruning_ratio=0.25,0.5,0.75", "--set", "s2.epochs=50", "--workers", "2"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = ""
        deadline = time.monotonic() + 90
        while "started" not in seen and time.monotonic() < deadline:
            seen += proc.stderr.readline()
        assert "started" in seen, seen
        children = psutil.Process(proc.pid).children(recursive=True)
        time.sleep(2)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert time.monotonic() - t0 < 20
    assert "cancelling the sweep" in err and "cancelled" in out
    _, alive = psutil.wait_procs(children, timeout=10)  # multiprocessing's helper exits once its pipe closes
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], [p.cmdline()[:4] for p in alive]
