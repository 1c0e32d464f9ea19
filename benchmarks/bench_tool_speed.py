"""How fast the tool itself is: cold start to a shown window, open + stats of a 100M-parameter model,
step-cache re-run saving, and peak memory (max RSS) of open and of a pipeline run.

Every figure comes from fresh processes (cold interpreter, warm OS file cache), REPEATS times;
the median and the spread (min–max) are printed. Peak memory is ru_maxrss of the measured
process tree (resource.RUSAGE_CHILDREN of a small wrapper process, so job workers count).
The worst UI stall during a run is measured by benchmarks/bench_ui_stall.py (its last result is
summarised here when present).

Run: ``python -m benchmarks.bench_tool_speed`` (≈2–3 min on 2 cores).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPEATS = 3
WRAPPER = r'''
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "rc": p.returncode,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "stderr": p.stderr[-2000:]}))
'''


def _measure(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, env=env)
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    if rec["rc"] != 0:
        raise RuntimeError(f"{argv[:3]} failed (rc {rec['rc']}): {rec['stderr']}")
    return rec


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def cold_start(env: dict[str, str]) -> list[float]:
    """Seconds from process start to the main window shown (offscreen), via SLIMLINE_EXIT_AFTER_SHOW."""
    times = []
    for _ in range(REPEATS):
        t0 = time.time()
        p = subprocess.run([sys.executable, "-m", "slimline.gui.launcher"], capture_output=True, text=True,
                           env={**env, "SLIMLINE_EXIT_AFTER_SHOW": "1", "QT_QPA_PLATFORM": "offscreen"}, timeout=120)
        shown = [ln for ln in p.stderr.splitlines() if ln.startswith("SLIMLINE_SHOWN ")]
        if not shown:
            raise RuntimeError(f"the window never reported being shown (rc {p.returncode}): {p.stderr[-1500:]}")
        times.append(float(shown[-1].split()[1]) - t0)
    return times


def main() -> None:
    from benchmarks.common import print_table, save_results
    from slimline.core.demo import demo_paths

    results: dict[str, Any] = {"repeats": REPEATS}
    with tempfile.TemporaryDirectory(prefix="bench_tool_speed_") as d:
        tmp = Path(d)
        home = tmp / "home"
        home.mkdir()
        env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
               "XDG_DATA_HOME": str(home / ".local/share"), "SLIMLINE_WORKSPACE": str(tmp / "ws_gui"),
               "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        rows: list[list[Any]] = []

        # 1. cold start to window
        try:
            t = cold_start(env)
            results["cold_start_s"] = t
            rows.append(["cold start → main window shown (offscreen)", _summary(t), "—"])
        except Exception as exc:  # noqa: BLE001 - the GUI may be unavailable on this machine
            results["cold_start_error"] = str(exc)[:300]
            rows.append(["cold start → main window shown", f"n/a: {str(exc)[:80]}", "—"])

        # 2. open + stats of a 100M-parameter model, in a fresh process (slimline inspect --json)
        from benchmarks.bench_open import LAYERS, WIDTH, build_model

        big = build_model(tmp, external=False)
        params = LAYERS * WIDTH * (WIDTH + 1)
        cli = [sys.executable, "-m", "slimline.gui.launcher"]
        opens = [_measure([*cli, "inspect", str(big), "--json"], env) for _ in range(REPEATS)]
        results["open_stats"] = {"params": params, "bytes": big.stat().st_size, "runs": opens}
        rows.append([f"open + exact stats of every tensor, {params / 1e6:.0f}M params "
                     f"({big.stat().st_size / 1e6:.0f} MB ONNX; `slimline inspect --json`, cold process)",
                     _summary([o["seconds"] for o in opens]), _summary([o["maxrss_mb"] for o in opens])])
        lists = [_measure([*cli, "inspect", str(big), "--no-stats", "--json"], env) for _ in range(REPEATS)]
        rows.append(["open + layer table only (--no-stats), same model", _summary([o["seconds"] for o in lists]),
                     _summary([o["maxrss_mb"] for o in lists])])
        big.unlink()

        # 3. step-cache re-run saving: the same pipeline twice in one workspace
        paths = demo_paths()
        pipe = tmp / "pipe.json"
        pipe.write_text(json.dumps({
            "format": "slimline.pipeline", "schema_version": 1, "name": "tool speed",
            "steps": [{"id": "s1", "plugin": "builtin.prune_structured", "params": {"pruning_ratio": 0.5,
                                                                                  "importance": "magnitude"}},
                      {"id": "s2", "plugin": "builtin.convert_onnx", "params": {"exporter": "legacy"}},
                      {"id": "s3", "plugin": "builtin.quantize_static", "params": {}}],
            "evaluation": {"data": str(paths["eval"]), "train_data": str(paths["train"]),
                           "latency": {"batch_sizes": [1], "runs": 20, "warmup": 5, "threads": 1}}}))
        runs = []
        for i in range(REPEATS):
            ws = tmp / f"ws{i}"
            run_cmd = [*cli, "run", str(pipe), str(paths["torch"]), "--workspace", str(ws), "--threads", "1"]
            first = _measure(run_cmd, env)
            again = _measure(run_cmd, env)
            runs.append({"first": first, "cached": again})
        results["rerun"] = runs
        f = [r["first"]["seconds"] for r in runs]
        c = [r["cached"]["seconds"] for r in runs]
        saving = [1 - b / a for a, b in zip(f, c)]
        rows.append(["pipeline run, demo CNN: prune 50% → ONNX → static INT8 (+ measuring every step), "
                     "`slimline run`", _summary(f), _summary([r["first"]["maxrss_mb"] for r in runs])])
        rows.append(["same pipeline again, same workspace (step cache hit; only the original is re-measured)",
                     _summary(c), _summary([r["cached"]["maxrss_mb"] for r in runs])])
        rows.append(["  → re-run saving", f"{statistics.median(saving) * 100:.0f}% "
                     f"(min {min(saving) * 100:.0f}%, max {max(saving) * 100:.0f}%)", ""])

    print_table(f"Tool speed (seconds, peak RSS MB of the process tree; median of {REPEATS} fresh processes "
                "with min/max)", ["what", "seconds", "peak memory MB"], rows)
    stall = Path(__file__).resolve().parent / "results" / "bench_ui_stall.json"
    if stall.is_file():
        try:
            doc = json.loads(stall.read_text())
            keys = {k: v for k, v in doc.items() if "stall" in k or "worst" in k or "p99" in k}
            print(f"\nworst UI stall during a run (bench_ui_stall, {doc.get('when', '?')}): "
                  f"{json.dumps(keys, default=str)[:400]}")
        except ValueError:
            pass
    else:
        print("\nworst UI stall during a run: measured by benchmarks/bench_ui_stall.py "
              "(runs after this in `make bench`)")
    print(f"results: {save_results('bench_tool_speed', results)}")


if __name__ == "__main__":
    main()
