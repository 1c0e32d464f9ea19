"""A 6-variant sweep of the demo on the local process pool and on a two-node Ray cluster: wall time, same figures.

The demo CNN, structured pruning (ratio 0.25/0.5/0.75 × importance magnitude/taylor) followed by
a 3-epoch distillation from the original, evaluated on digits_eval.npz (n=449) with latency at
batch 1 (20 runs). Local: 2 worker processes. Ray: `ray start --head` plus one more node on this
machine (1 CPU each, started and stopped here), files through the object store. Both measure with
1 thread per variant, so their figures must agree (size, parameters, top-1, fidelity, the final
model's tensors); latency is left out (each engine timed its variants beside others).

Wall time on a shared machine depends on who else runs: Linux's autogroup scheduler shares the CPU
between sessions, and each Ray worker runs in a session of its own while the local pool's workers
share the sweep's session (and, in the window, the app's priority policy). On this 2-core machine
at load ~8 from other users, putting the local workers in sessions of their own took a 6-variant
sweep from 38 s to 25 s (Ray: 22 s): the gap is the scheduler's, not the engines'. So the CPU
seconds each variant's worker process used (user + system, read with psutil when the variant
starts and ends) are printed too: they do not depend on the load.

Run: ``python -m benchmarks.bench_sweep`` (needs the ray extra).
"""
from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import print_table, save_results

GRID = ["s1.pruning_ratio=0.25,0.5,0.75", "s1.importance=magnitude,taylor"]
FIXED = ["s2.epochs=3"]
EVALUATION = {"latency": {"batch_sizes": [1], "runs": 20, "warmup": 5}}


def request(workspace: Path, engine: str, **fields: Any) -> Any:
    from slimline.core.demo import demo_paths
    from slimline.core.engines.sweep import SweepRequest
    from slimline.core.pipeline import load_pipeline

    paths = demo_paths()
    pipe = load_pipeline(paths["pipeline"])
    pipe = pipe.model_copy(update={"steps": pipe.steps[:2], "name": "demo: prune → distill"})
    return SweepRequest(pipeline=pipe, model_path=str(paths["torch"]), data_path=str(paths["eval"]),
                        train_path=str(paths["train"]), grid=GRID, fixed=FIXED, evaluation=EVALUATION,
                        engine=engine, workspace=str(workspace), threads=1, **fields)


def tensors_digest(path: str) -> str:
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(path, framework="numpy") as f:
        for k in sorted(f.keys()):
            h.update(k.encode() + f.get_tensor(k).tobytes())
    return h.hexdigest()[:16]


def figures(o: Any) -> dict[str, Any]:
    f = o.final
    return {"status": o.status, "bytes": f.size.bytes_on_disk, "params": f.size.param_count,
            "top1": f.accuracy.top1 if f.accuracy else None, "cosine": f.fidelity.mean_cosine if f.fidelity else None,
            "tensors": tensors_digest(f.model.path)}


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = []
    for k, x in a.items():
        y = b[k]
        same = math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9) if isinstance(x, float) and isinstance(y, float) \
            else x == y
        if not same:
            out.append(f"{k} {x} vs {y}")
    return out


class CpuMeter:
    """on_event hook: CPU seconds of each variant's worker process between its start and its end."""

    def __init__(self) -> None:
        self.start: dict[int, tuple[int, float]] = {}
        self.used: dict[int, float] = {}

    @staticmethod
    def _cpu(pid: int) -> float | None:
        import psutil

        try:
            t = psutil.Process(pid).cpu_times()
            return float(t.user + t.system)
        except psutil.Error:
            return None

    def __call__(self, ev: Any) -> None:
        if ev.kind == "started" and ev.pid and ev.index not in self.start:
            cpu = self._cpu(ev.pid)
            if cpu is not None:
                self.start[ev.index] = (ev.pid, cpu)
        elif ev.kind == "finished" and ev.index in self.start:
            pid, cpu0 = self.start[ev.index]
            cpu = self._cpu(pid)
            if cpu is not None:
                self.used[ev.index] = cpu - cpu0

    def cell(self, i: int) -> str:
        return f"{self.used[i]:.1f}" if i in self.used else "-"


def main() -> None:
    from slimline.core.engines.ray_local import LocalRayCluster
    from slimline.core.engines.sweep import run_sweep

    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        cpu_local, cpu_ray = CpuMeter(), CpuMeter()
        t0 = time.perf_counter()
        local = run_sweep(request(ws / "local", "local", workers=2), on_event=cpu_local)
        local_wall = time.perf_counter() - t0
        env = {"SLIMLINE_RAY_ROOT": str(ws / "ray-nodes"), "OMP_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        with LocalRayCluster(nodes=2, cpus_per_node=1, env=env) as cluster:
            cluster_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            ray = run_sweep(request(ws / "ray", "ray", address=cluster.address), on_event=cpu_ray)
            ray_wall = time.perf_counter() - t1
        rows, mismatches = [], []
        for lo, ro in zip(local.outcomes, ray.outcomes):
            fl, fr = figures(lo), figures(ro)
            diff = differences(fl, fr)
            mismatches += [f"{lo.label}: {d}" for d in diff]
            rows.append([lo.label, f"{fl['bytes'] / 1e6:.2f} MB", f"{fl['top1']:.4f}", f"{fr['top1']:.4f}",
                         "yes" if not diff else "NO: " + "; ".join(diff), cpu_local.cell(lo.index),
                         cpu_ray.cell(ro.index), f"{lo.wall_s:.1f}", f"{ro.wall_s:.1f}", ro.worker.split(" pid")[0]])
        load1 = os.getloadavg()
        print_table(f"6-variant demo sweep (prune → 3-epoch distill; top-1 on digits_eval n=449; 1 thread per "
                    f"variant; load average {load0[0]:.1f} → {load1[0]:.1f} on {os.cpu_count()} cores)",
                    ["variant", "size", "top-1 local", "top-1 ray", "same figures", "CPU s local", "CPU s ray",
                     "wall s local", "wall s ray", "ray node"], rows)
        cpu = [sum(m.used.values()) for m in (cpu_local, cpu_ray)]
        print_table("wall time of the whole sweep", ["engine", "wall s", "note"], [
            ["local (2 worker processes)", f"{local_wall:.1f}", f"{local.engine_description}; variants used "
                                                                f"{cpu[0]:.0f} CPU s"],
            ["ray (2 nodes × 1 CPU)", f"{ray_wall:.1f}", f"{ray.engine_description}; variants used {cpu[1]:.0f} CPU s; "
                                                          f"cluster start {cluster_s:.1f} s not included"],
        ])
        print("same variants and figures on both engines" if not mismatches and
              [o.label for o in local.outcomes] == [o.label for o in ray.outcomes]
              else f"DIFFERENCES: {mismatches}")
        save_results("sweep", {"grid": GRID, "fixed": FIXED, "local_wall_s": local_wall, "ray_wall_s": ray_wall,
                               "ray_cluster_start_s": cluster_s, "mismatches": mismatches,
                               "cpu_s": {"local": cpu_local.used, "ray": cpu_ray.used},
                               "load_average": [load0, load1], "variants": rows})


if __name__ == "__main__":
    main()
