"""`slimline sweep`: every combination of step settings as its own run, on the local pool or a Ray cluster."""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from slimline.core.errors import SlimlineError

HELP = """\
Each --grid STEP.PARAM=V1,V2,… multiplies the variants (STEP is a step id of the pipeline,
PARAM one of its plugin's parameters; values are checked against the plugin before anything
runs). Every variant is its own run in the workspace history (Results, Pareto chart,
`slimline report`); a summary lands in WORKSPACE/sweeps/.

Engines:
  local  a pool of processes on this machine, one variant each, at most one per core (default)
  ray    one Ray task per variant (needs `pip install slimline[ray]`): --address HOST:PORT of a
         cluster (`ray start --head` prints it; `auto` finds one on this machine), or none to
         start a private local instance. Files travel by content hash through Ray's object
         store, or through --shared-dir when every node mounts that folder.
Ctrl-C cancels: queued variants are dropped, running ones stopped (Ray tasks cancelled).

Examples:
  slimline sweep --demo --grid s1.pruning_ratio=0.25,0.5,0.75 --set s2.epochs=2
  slimline sweep pipe.json model.onnx --data eval.npz --grid s1.sparsity=0.3,0.5,0.7 \\
      --grid s2.per_channel=true,false --engine ray --address 10.0.0.5:6379
"""


def add_parser(sub: Any) -> None:
    """Add `sweep` to the `slimline` subparsers (core/cli.py lists it with cmd_sweep)."""
    s = sub.add_parser("sweep", help="run a grid of step settings as separate runs (local pool or Ray)",
                       description="Run every combination of step settings as its own run.", epilog=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("pipeline", nargs="?", help="pipeline .json (default with --demo: the demo pipeline)")
    s.add_argument("model", nargs="?", help="model to compress (default with --demo: the demo CNN)")
    s.add_argument("--demo", action="store_true", help="use the bundled demo model, data and pipeline")
    s.add_argument("--data", help="evaluation dataset")
    s.add_argument("--train-data", help="training/calibration dataset")
    s.add_argument("--grid", action="append", default=[], metavar="STEP.PARAM=V1,V2,…",
                   help="values to sweep for one step parameter (repeat for more parameters)")
    s.add_argument("--set", action="append", default=[], dest="fixed", metavar="STEP.PARAM=VALUE",
                   help="a step parameter set for every variant")
    s.add_argument("--engine", default="local", choices=["local", "ray"], help="where variants run (default local)")
    s.add_argument("--address", help="Ray cluster address (HOST:PORT, or auto); default: $RAY_ADDRESS, "
                                     "else a private local Ray instance")
    s.add_argument("--shared-dir", help="Ray: a folder every node can read and write; files travel through it "
                                        "instead of the object store")
    s.add_argument("--workers", type=int, help="variants at once (local default: one per core; "
                                               "ray default: as many as the cluster schedules)")
    s.add_argument("--num-cpus", type=float, default=1.0, help="CPUs each variant asks Ray for (default 1)")
    s.add_argument("--max-rows", type=int, help="evaluate each variant on at most this many rows")
    s.add_argument("--latency-runs", type=int, help="timed runs per batch size (pipeline default otherwise)")
    s.add_argument("--workspace", help="workspace for the runs (default: the app's)")
    s.add_argument("--threads", type=int, default=0,
                   help="intra-op threads per variant for measuring (0 = cores / workers)")
    s.add_argument("--no-cache", action="store_true", help="recompute every step")
    s.add_argument("--trust", action="store_true", help="allow loading pickled code from the model file")
    s.add_argument("--json", action="store_true", help="print the sweep as JSON (stdout holds only the JSON)")


def request_from_args(args: argparse.Namespace) -> Any:
    """The SweepRequest the arguments describe (the demo fills in what is missing with --demo)."""
    from slimline.core.demo import demo_paths
    from slimline.core.engines.sweep import SweepRequest
    from slimline.core.history import default_workspace
    from slimline.core.pipeline import load_pipeline

    pipeline_path, model_path = args.pipeline, args.model
    data, train = args.data, args.train_data
    if args.demo:
        paths = demo_paths()
        pipeline_path = pipeline_path or str(paths["pipeline"])
        model_path = model_path or str(paths["torch"])
    if not pipeline_path or not model_path:
        raise SlimlineError("sweep needs a PIPELINE and a MODEL (or --demo)",
                            hint="slimline sweep pipeline.json model.onnx --data eval.npz --grid s1.sparsity=0.3,0.5")
    if not args.grid:
        raise SlimlineError("no --grid given: nothing to sweep", subject="--grid",
                            hint="add --grid STEP.PARAM=V1,V2 (e.g. --grid s1.pruning_ratio=0.25,0.5)")
    pipeline = load_pipeline(pipeline_path)
    evaluation: dict[str, Any] = {}
    if args.max_rows:
        evaluation["max_rows"] = args.max_rows
    if args.latency_runs:
        evaluation["latency"] = {"runs": args.latency_runs}
    workspace = Path(args.workspace) if args.workspace else default_workspace()
    return SweepRequest(pipeline=pipeline, model_path=str(Path(model_path).resolve()),
                        data_path=str(Path(data).resolve()) if data else None,
                        train_path=str(Path(train).resolve()) if train else None, grid=args.grid,
                        fixed=args.fixed, evaluation=evaluation, engine=args.engine, address=args.address,
                        workers=args.workers, shared_dir=args.shared_dir, workspace=str(workspace.resolve()),
                        trust=args.trust, threads=args.threads, use_cache=not args.no_cache, num_cpus=args.num_cpus)


def cmd_sweep(args: argparse.Namespace) -> int:
    from slimline.core.engines.base import get_engine
    from slimline.core.engines.sweep import build_specs, run_sweep
    from slimline.core.plugin import CancelToken

    req = request_from_args(args)
    _, _, specs = build_specs(req)   # a bad grid fails here, before any engine starts
    get_engine(req.engine, workers=req.workers, address=req.address, shared_dir=req.shared_dir)
    cancel = CancelToken()
    printer = _Progress(len(specs), sys.stderr)
    print(f"sweep: {len(specs)} variant{'s' if len(specs) != 1 else ''} on the {req.engine} engine",
          file=sys.stderr)

    def on_sigint(_sig: int, _frame: Any) -> None:
        if cancel.cancelled:  # a second Ctrl-C: stop waiting at once
            raise KeyboardInterrupt
        print("\ncancelling the sweep… (Ctrl-C again to stop waiting)", file=sys.stderr)
        cancel.cancel()

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        record = run_sweep(req, on_event=printer, cancel=cancel, specs=specs)
    finally:
        signal.signal(signal.SIGINT, old)
    if args.json:
        print(json.dumps(sweep_json(record), indent=1))
    else:
        print_sweep(record)
    if record.status == "cancelled":
        return 130
    return 0 if all(o.ok for o in record.outcomes) else 1


def variant_figures(outcome: Any) -> dict[str, Any]:
    """Size, accuracy/fidelity and latency of a variant's final model (None where not measured)."""
    final = outcome.final
    out: dict[str, Any] = {"size_bytes": None, "param_count": None, "top1": None, "fidelity": None,
                           "fidelity_metric": None, "p50_ms": None, "latency_batch": None}
    if final is None or outcome.status != "done":
        return out
    out["size_bytes"], out["param_count"] = final.size.bytes_on_disk, final.size.param_count
    if final.accuracy is not None:
        out["top1"] = final.accuracy.top1
    fid = final.fidelity
    if fid is not None:
        out["fidelity"] = fid.value if fid.task and fid.value is not None else fid.mean_cosine
        out["fidelity_metric"] = fid.metric or "mean cosine"
    if final.latency:
        batch = min(final.latency, key=lambda k: int(k) if str(k).isdigit() else 10**9)
        out["p50_ms"], out["latency_batch"] = final.latency[batch].p50_ms, int(batch)
    return out


def sweep_json(record: Any) -> dict[str, Any]:
    doc = record.summary()
    doc["variants"] = [{**o.summary(), **variant_figures(o)} for o in record.outcomes]
    doc.pop("outcomes", None)
    return doc


def print_sweep(record: Any, out: TextIO | None = None) -> None:
    from slimline.core.render import fmt_bytes, table

    out = out or sys.stdout
    rows = []
    for o in record.outcomes:
        f = variant_figures(o)
        quality = f"{f['top1']:.4f}" if f["top1"] is not None else (
            f"{f['fidelity']:.4f}" if f["fidelity"] is not None else "-")
        lat = f"{f['p50_ms']:.3f}" if f["p50_ms"] is not None else "-"
        rows.append([str(o.index + 1), o.label, fmt_bytes(f["size_bytes"]), quality, lat, f"{o.wall_s:.1f}",
                     o.status, o.worker or "-", o.run_id or "-"])
    n_done = sum(o.ok for o in record.outcomes)
    batch = next((variant_figures(o)["latency_batch"] for o in record.outcomes if o.ok), None)
    has_top1 = any(variant_figures(o)["top1"] is not None for o in record.outcomes)
    quality_head = "top-1" if has_top1 else "fidelity"
    headers = ["#", "settings", "size", quality_head, f"p50 b{batch or 1} ms", "wall s", "status", "worker", "run"]
    print(f"\nsweep {record.sweep_id} — {record.engine_description}", file=out)
    print(table(headers, rows, align="rlrrrrlll"), file=out)
    for o in record.outcomes:
        if not o.ok and o.reason:
            print(f"  #{o.index + 1} {o.status}: {o.reason}" + (f"\n     → {o.hint}" if o.hint else ""), file=out)
    print(f"\n{n_done}/{len(record.outcomes)} variants done in {record.wall_s:.1f} s wall time"
          + (" (cancelled)" if record.status == "cancelled" else ""), file=out)
    print("latency: each variant timed while others ran beside it; compare latencies within one sweep with care, "
          "and re-time finalists with `slimline bench`", file=out)


class _Progress:
    """One stderr line per variant start and end (the table comes at the end)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream = total, stream

    def __call__(self, ev: Any) -> None:
        tag = f"[{ev.index + 1}/{self.total}] {ev.label}"
        if ev.kind == "started":
            print(f"{tag}: started ({ev.worker})", file=self.stream, flush=True)
        elif ev.kind == "finished" and ev.outcome is not None:
            o = ev.outcome
            why = f" — {o.reason}" if o.reason else ""
            print(f"{tag}: {o.status} in {o.wall_s:.1f} s{why}", file=self.stream, flush=True)
