"""`slimline report RUN`: a self-contained HTML report of a recorded run."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from slimline.core.errors import SlimlineError


def add_parser(sub: Any) -> None:
    """Add `report` to the `slimline` subparsers (core/cli.py lists it with cmd_report)."""
    r = sub.add_parser("report", help="write a self-contained HTML report of a run (no network, no JS)")
    r.add_argument("run", help="run folder, its run.json, a run id in the workspace, or 'latest'")
    r.add_argument("--out", "-o", help="HTML file (default: <run folder>/report.html)")
    r.add_argument("--workspace", help="workspace to look run ids up in")
    r.add_argument("--no-stats", action="store_true", help="skip the per-layer statistics (faster)")
    r.add_argument("--force", action="store_true", help="overwrite an existing report file")


def find_run(target: str, workspace: str | None = None) -> Path:
    """The run.json for a folder, a run.json path, a run id or 'latest'."""
    from slimline.core.history import default_workspace

    p = Path(target).expanduser()
    if p.is_dir() and (p / "run.json").is_file():
        return p / "run.json"
    if p.is_file():
        return p
    runs = Path(workspace).expanduser() if workspace else default_workspace()
    runs = runs / "runs"
    if target == "latest":
        found = sorted(runs.glob("*/run.json"))
        if found:
            return found[-1]
    elif (runs / target / "run.json").is_file():
        return runs / target / "run.json"
    raise SlimlineError("no such run", subject=target,
                        hint=f"give a run folder or run.json, or a run id from {runs}")


def cmd_report(args: argparse.Namespace) -> int:
    from slimline.core.export.report import load_export_records, write_report
    from slimline.core.history import load_run

    rj = find_run(args.run, args.workspace)
    try:
        record = load_run(rj)
    except OSError as exc:
        raise SlimlineError(f"cannot read the run record: {exc}", subject=str(rj),
                            hint="pick another run; this one may have been interrupted while writing") from None
    except ValueError as exc:  # bad JSON, or not a Slimline run record
        raise SlimlineError(f"not a readable Slimline run record: {str(exc).splitlines()[0]}", subject=str(rj),
                            hint="give the run.json inside a workspace's runs/<run_id>/ folder") from None
    out = Path(args.out) if args.out else rj.parent / "report.html"
    if out.exists() and not args.force:
        raise SlimlineError("the report file already exists", subject=str(out),
                            hint="pass --force to overwrite it, or choose another --out")
    from slimline.core.export.report_search import load_search

    write_report(record, out, exports=load_export_records(rj.parent), stats=not args.no_stats,
                 search=load_search(rj.parent))
    print(f"wrote {out} ({out.stat().st_size / 1000:.0f} kB)", file=sys.stderr)
    print(out)
    return 0
