"""Headless `slimline` subcommands over the engine: a pure parser and a dispatcher.

The `slimline` entry point itself lives outside the engine (the launcher in the GUI package),
because with no subcommand it opens the window; the engine never imports the GUI.
`python -m slimline.core.cli SUBCOMMAND` runs the same subcommands headless.

Every subcommand is listed in :func:`subcommands` (parser builder + handler), so the
parser is built from one explicit table: no module is discovered or string-imported
at run time, and no subcommand module imports this one back. Imports stay light at
module level so `slimline --help` and `slimline plugins` start fast (a test checks
that torch, onnxruntime and Qt are not imported).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimline.core import __version__
from slimline.core.errors import SlimlineError

if TYPE_CHECKING:
    from slimline.core.results import FailedEvent

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Subcommand:
    """One `slimline NAME` subcommand: `add_parser(sub)` adds its subparser, `handler(args)` runs it."""

    name: str
    add_parser: Callable[[Any], None]
    handler: Handler


def subcommands() -> tuple[Subcommand, ...]:
    """The engine's subcommands, in help order (export/report/sweep/sensitivity/search imported here, explicitly)."""
    from slimline.core import export_cli, report_cli, search_cli, sensitivity_cli, sweep_cli

    return (
        Subcommand("inspect", _add_inspect, cmd_inspect),
        Subcommand("run", _add_run, cmd_run),
        Subcommand("bench", _add_bench, cmd_bench),
        Subcommand("plugins", _add_plugins, cmd_plugins),
        Subcommand("export", export_cli.add_parser, export_cli.cmd_export),
        Subcommand("report", report_cli.add_parser, report_cli.cmd_report),
        Subcommand("sweep", sweep_cli.add_parser, sweep_cli.cmd_sweep),
        Subcommand("sensitivity", sensitivity_cli.add_parser, sensitivity_cli.cmd_sensitivity),
        Subcommand("search", search_cli.add_parser, search_cli.cmd_search),
    )


def command_names(extra: Sequence[Subcommand] = ()) -> tuple[str, ...]:
    """Subcommand names (the launcher tells a subcommand from a model path with these)."""
    return tuple(c.name for c in (*subcommands(), *extra))


def build_parser(extra: Sequence[Subcommand] = ()) -> argparse.ArgumentParser:
    """The `slimline` argument parser; `extra` adds front-end subcommands (the launcher's `gui`)."""
    p = argparse.ArgumentParser(
        prog="slimline",
        description="Inspect, compress, measure and export neural networks. "
                    "With no subcommand (or just a model path) the desktop app opens.",
        epilog="Examples:\n  slimline inspect model.onnx\n  slimline run --demo\n"
               "  slimline run pipeline.json model.onnx --data eval.npz --out results/\n"
               "  slimline bench model.onnx --batch 1 64",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"slimline {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for command in (*subcommands(), *extra):
        command.add_parser(sub)
    return p


def run(argv: Sequence[str] | None = None, extra: Sequence[Subcommand] = ()) -> int:
    """Parse `argv` and run one subcommand; user-facing errors print a message and exit 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(extra)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    handlers = {c.name: c.handler for c in (*subcommands(), *extra)}
    try:
        return int(handlers[args.command](args) or 0)
    except SlimlineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


main = run  # `python -m slimline.core.cli` and callers that say main(argv)


def _add_inspect(sub: Any) -> None:
    s = sub.add_parser("inspect", help="summary and per-layer weight statistics of a model")
    s.add_argument("model", help="ONNX file, TorchScript/.pt2 archive, checkpoint, safetensors or HF folder")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--no-stats", action="store_true", help="skip the value scan (names and shapes only)")
    s.add_argument("--limit", type=int, default=40, help="layers to print (default 40; --json prints all)")
    s.add_argument("--expand", action="store_true",
                   help="list every tensor of repeated blocks (decoder layers) instead of one row per group")
    s.add_argument("--trust", action="store_true",
                   help="allow loading pickled code from this file (only for files you trust)")


def _add_run(sub: Any) -> None:
    r = sub.add_parser("run", help="run a pipeline on a model and print the results per step")
    r.add_argument("pipeline", nargs="?", help="pipeline .json (default with --demo: the demo pipeline)")
    r.add_argument("model", nargs="?", help="model to compress (default with --demo: the demo CNN)")
    r.add_argument("--demo", nargs="?", const="cnn", choices=["cnn", "llm"],
                   help="use a demo: 'cnn' (default) the bundled digits CNN, data and pipeline; 'llm' "
                        "weight-only INT4 of SmolLM2-135M on real text, from the real-model cache (make realmodels)")
    r.add_argument("--data", help="evaluation dataset (.npz, .csv, image folder, .txt)")
    r.add_argument("--train-data", help="training/calibration dataset (distillation, static quantization)")
    r.add_argument("--out", help="folder for the final model, results.json and results.md")
    r.add_argument("--workspace", help="workspace for the step cache and run history")
    r.add_argument("--threads", type=int, default=0, help="intra-op threads for measuring (0 = all cores)")
    r.add_argument("--no-cache", action="store_true", help="recompute every step")
    r.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE",
                   help="value for a dynamic input dim (e.g. --dim sequence=64)")
    r.add_argument("--trust", action="store_true", help="allow loading pickled code from the model file")
    r.add_argument("--set", action="append", default=[], dest="settings", metavar="STEP.PARAM=VALUE",
                   help="set a step parameter for this run (e.g. --set s2.engine=torchrun --set s2.nproc=2)")
    r.add_argument("--json", action="store_true", help="print the run record as JSON")


def _add_bench(sub: Any) -> None:
    b = sub.add_parser("bench", help="latency (p50/p90 with warm-up), size and accuracy of one model")
    b.add_argument("model")
    b.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes (default 1)")
    b.add_argument("--runs", type=int, default=50)
    b.add_argument("--warmup", type=int, default=10)
    b.add_argument("--threads", type=int, default=0)
    b.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    b.add_argument("--data", help="dataset for inputs and accuracy (else random inputs, latency only)")
    b.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE")
    b.add_argument("--trust", action="store_true")
    b.add_argument("--json", action="store_true")


def _add_plugins(sub: Any) -> None:
    pl = sub.add_parser("plugins", help="list installed plugins with their parameters and defaults")
    pl.add_argument("--json", action="store_true")


def _dims(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise SlimlineError(f"--dim {item!r} must look like NAME=INTEGER", subject="--dim")
        out[name.strip()] = int(value)
    return out


def cmd_plugins(args: argparse.Namespace) -> int:
    from slimline.core.registry import discover

    entries = discover()
    if args.json:
        print(json.dumps([e.plugin.info() if e.plugin else {"id": e.id, "error": e.error}
                          for e in entries.values()], indent=2))
        return 0
    for entry in sorted(entries.values(), key=lambda e: (e.plugin.category if e.plugin else "~", e.id)):
        if entry.plugin is None:
            print(f"{entry.id}  [failed to load: {entry.error}]")
            continue
        cls = entry.plugin
        print(f"{cls.id} (v{cls.version}) — {cls.title} [{cls.category}] "
              f"{'/'.join(cls.input_formats)} → {'same' if cls.preserves_format else cls.output_format}")
        schema = cls.Params.model_json_schema()
        fields = cls.Params.model_fields
        for name, prop in schema.get("properties", {}).items():
            field = fields.get(name)
            default = field.get_default(call_default_factory=True) if field and not field.is_required() \
                else "required"
            choices = prop.get("enum") or _enum_of(prop, schema)
            extra = f" one of {choices}" if choices else ""
            print(f"    {name} = {json.dumps(default, default=str)}{extra}  — {prop.get('description', '')}")
    return 0


def _enum_of(prop: dict[str, Any], schema: dict[str, Any]) -> list[Any] | None:
    ref = prop.get("$ref") or (prop.get("allOf") or [{}])[0].get("$ref")
    if ref:
        return schema.get("$defs", {}).get(ref.split("/")[-1], {}).get("enum")
    return None


def cmd_inspect(args: argparse.Namespace) -> int:
    from slimline.core.models import open_model
    from slimline.core.render import print_inspect

    handle = open_model(args.model, trust=args.trust)
    rows = None
    if not args.no_stats:
        from slimline.core.stats import compute_stats

        rows = compute_stats(handle)
    else:
        from slimline.core.stats import layer_inventory

        rows = layer_inventory(handle)
    print_inspect(handle, rows, as_json=args.json, limit=args.limit, expand=args.expand)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from slimline.core.metrics import accuracy, environment, measure_latency, measure_size
    from slimline.core.models import open_model
    from slimline.core.render import print_bench

    handle = open_model(args.model, trust=args.trust)
    if args.dim:
        handle = handle.with_dims(**_dims(args.dim))
    if not handle.capabilities.run:
        raise SlimlineError(handle.capabilities.reason or "this model cannot be run", subject=args.model)
    data = None
    if args.data:
        from slimline.core.data import check_dataset, load_dataset

        data = load_dataset(args.data, handle)
        check_dataset(data, handle)
    lat = [measure_latency(handle, batch=b, runs=args.runs, warmup=args.warmup, threads=args.threads,
                           device=args.device, dataset=data) for b in args.batch]
    acc = accuracy(handle, data) if data is not None and data.labels is not None else None
    print_bench(handle, measure_size(handle), lat, acc, environment(), as_json=args.json)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from slimline.core.demo import demo_paths
    from slimline.core.history import default_workspace
    from slimline.core.jobs import start_pipeline_job
    from slimline.core.pipeline import load_pipeline
    from slimline.core.render import ProgressPrinter, print_run, write_run_outputs
    from slimline.core.results import CancelledEvent, DoneEvent, FailedEvent, FinalEvent

    pipeline_path, model_path = args.pipeline, args.model
    data_path, train_path = args.data, args.train_data
    if args.demo == "llm":
        from slimline.core.demo import llm_demo_paths

        paths = llm_demo_paths()
        pipeline_path = pipeline_path or str(paths["pipeline"])
        model_path = model_path or str(paths["model"])
        data_path = data_path or str(paths["data"])
    elif args.demo:
        paths = demo_paths()
        pipeline_path = pipeline_path or str(paths["pipeline"])
        model_path = model_path or str(paths["torch"])
    if not pipeline_path or not model_path:
        raise SlimlineError("run needs a PIPELINE and a MODEL (or --demo)",
                            hint="slimline run pipeline.json model.onnx --data eval.npz")
    pipeline = load_pipeline(pipeline_path)
    if args.settings:
        from slimline.core.engines.grid import parse_settings
        from slimline.core.engines.spec import apply_settings

        pipeline = apply_settings(pipeline, parse_settings(pipeline, args.settings))
    workspace = Path(args.workspace) if args.workspace else default_workspace()
    job = start_pipeline_job(pipeline, model_path, data_path=data_path, train_path=train_path,
                             workspace=workspace, trust=args.trust, threads=args.threads,
                             use_cache=not args.no_cache, dims=_dims(args.dim))
    printer = ProgressPrinter(stream=sys.stderr)
    final: FinalEvent | None = None
    try:
        while job.alive:
            for ev in job.poll(timeout=0.1):
                printer.handle(ev)
                if isinstance(ev, (DoneEvent, FailedEvent, CancelledEvent)):
                    final = ev
    except KeyboardInterrupt:
        print("\ncancelling…", file=sys.stderr)
        job.cancel()
        while job.alive:
            job.poll(timeout=0.1)
        return 130
    printer.close()
    from slimline.core.history import load_run, run_dir

    if not (run_dir(workspace, job.run_id) / "run.json").is_file():  # failed before the run began (bad data)
        if not isinstance(final, FailedEvent):
            final = FailedEvent(message="the run ended before it was recorded", hint="see the messages above")
        _print_failure(final)
        return 1
    record = load_run(run_dir(workspace, job.run_id))
    if args.json:  # stdout is the JSON alone (scripts parse it); human notes go to stderr
        print(json.dumps(record.to_dict(), indent=1))
    else:
        print_run(record)
    if args.out and record.status == "done":
        write_run_outputs(record, Path(args.out))
        print(f"\nwrote the final model and results to {args.out}", file=sys.stderr if args.json else sys.stdout)
    if isinstance(final, FailedEvent):
        _print_failure(final)
        return 1
    if isinstance(final, CancelledEvent):
        return 130
    return 0


def _print_failure(final: FailedEvent) -> None:
    where = final.subject or final.step_id
    print(f"\nerror: {where + ': ' if where else ''}{final.message}", file=sys.stderr)
    if final.hint:
        print(f"  → {final.hint}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
