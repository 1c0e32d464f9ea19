"""The demo pipeline end to end, then the step cache: what a re-run after an edit saves.

Prints the per-step table (size, p50 at batch 1 and 64, accuracy on the held-out
digits split) against the issue's targets, then re-runs with the last step edited
(only that step recomputes) and unchanged (everything cached).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import print_table, save_results


def _run(pipeline, model: str, ws: Path) -> tuple[Any, float]:
    from slimline.core.history import load_run, run_dir
    from slimline.core.jobs import start_pipeline_job

    t0 = time.perf_counter()
    job = start_pipeline_job(pipeline, model, workspace=ws)
    events = job.wait()
    elapsed = time.perf_counter() - t0
    if events[-1].type != "done":
        raise RuntimeError(f"demo pipeline failed: {events[-1]}")
    return load_run(run_dir(ws, job.run_id)), elapsed


def main() -> None:
    from slimline.core.demo import demo_paths
    from slimline.core.pipeline import load_pipeline
    from slimline.core.render import print_run

    paths = demo_paths()
    pipe = load_pipeline(paths["pipeline"])
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        record, cold = _run(pipe, str(paths["torch"]), ws)
        print_run(record)
        res = {r.step_id: r for r in record.results}
        orig = res["original"]
        onnx_fp32 = next(r for r in record.results if r.model.format == "onnx")
        final = record.results[-1]
        pruned = res.get("s1")
        distilled = res.get("s2")
        rows = []
        def ratio(a, b, key):
            return a.latency[key].p50_ms / b.latency[key].p50_ms
        if pruned:
            size_ratio = pruned.size.bytes_on_disk / orig.size.bytes_on_disk
            rows.append(["structured prune 50%: size vs original", f"{size_ratio:.3f}×", "≤ 0.30×"])
            rows.append(["structured prune 50%: p50 b1 vs original", f"{ratio(pruned, orig, '1'):.3f}×", "≤ 0.60×"])
            rows.append(["structured prune 50%: p50 b64 vs original", f"{ratio(pruned, orig, '64'):.3f}×", "≤ 0.60×"])
        if distilled:
            drop = (orig.accuracy.top1 - distilled.accuracy.top1) * 100
            rows.append(["prune + distill: top-1 drop (points)", f"{drop:.2f}", "≤ 1.00"])
        int8_ratio = final.size.bytes_on_disk / onnx_fp32.size.bytes_on_disk
        rows.append(["INT8 ONNX size vs fp32 ONNX", f"{int8_ratio:.3f}×", "≤ 0.30×"])
        rows.append(["INT8 ONNX p50 b1 vs fp32 ONNX", f"{ratio(final, onnx_fp32, '1'):.3f}×", "not slower (≤ 1.05×)"])
        print_table(f"demo targets (accuracy: {orig.accuracy.dataset}, n={orig.accuracy.n})",
                    ["figure", "measured", "target"], rows)

        edited = pipe.model_copy(deep=True)
        last = edited.steps[-1]
        last.params = {**last.params, "calibration_method": "Percentile"} if "calibration_method" in \
            __import__("slimline.core.registry", fromlist=["get_plugin"]).get_plugin(last.plugin).Params.model_fields \
            else {**last.params, "per_channel": False}
        rec2, warm_edit = _run(edited, str(paths["torch"]), ws)
        rec3, warm_same = _run(pipe, str(paths["torch"]), ws)
        recomputed = [r.step_id for r in rec2.results[1:] if not r.cached]
        print_table("step cache (same workspace)", ["run", "wall s", "steps recomputed"], [
            ["cold (empty cache)", f"{cold:.1f}", ", ".join(r.step_id for r in record.results[1:])],
            ["last step edited", f"{warm_edit:.1f}", ", ".join(recomputed) or "none"],
            ["unchanged", f"{warm_same:.1f}", ", ".join(r.step_id for r in rec3.results[1:] if not r.cached) or "none"],
        ])
        print(f"time saved by the cache after editing the last step: {cold - warm_edit:.1f} s "
              f"({(1 - warm_edit / cold) * 100:.0f}%)")
        save_results("demo", {"targets": rows, "cold_s": cold, "edited_s": warm_edit, "unchanged_s": warm_same,
                              "run": record.to_dict()})


if __name__ == "__main__":
    main()
