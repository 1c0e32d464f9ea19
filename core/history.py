"""Run history: every run is kept as ``workspace/runs/<run_id>/run.json`` (a variant).

The record is rewritten atomically after each step, so a killed run still
leaves everything up to the last finished step.
"""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from slimline.core.fsutil import atomic_write_text
from slimline.core.results import RunRecord, run_from_dict


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def run_dir(workspace: Path, run_id: str) -> Path:
    return Path(workspace) / "runs" / run_id


def save_run(workspace: Path, record: RunRecord) -> Path:
    """Write ``runs/<run_id>/run.json`` atomically (the JSON form of the record)."""
    path = run_dir(workspace, record.run_id) / "run.json"
    atomic_write_text(path, json.dumps(record.to_dict(), indent=1, default=str))
    return path


def load_run(path_or_dir: str | Path) -> RunRecord:
    """Read a run.json (or the run folder), migrating older versions; ValueError if it is not a run."""
    p = Path(path_or_dir)
    if p.is_dir():
        p = p / "run.json"
    return run_from_dict(json.loads(p.read_text()))


def list_runs(workspace: Path) -> list[RunRecord]:
    """All runs in the workspace, oldest first; unreadable records are skipped."""
    runs = []
    for p in sorted((Path(workspace) / "runs").glob("*/run.json")):
        try:
            runs.append(load_run(p))
        except (OSError, ValueError):
            continue
    return runs


def default_workspace() -> Path:
    """Where runs, caches and history live unless the user chose a folder.

    The one owner of this default: the CLI and the app (gui/settings.py) both use it, so a
    run started in one shows up in the other. $SLIMLINE_WORKSPACE overrides it; otherwise the
    platform's per-user data folder (XDG_DATA_HOME on Linux).
    """
    import os
    import sys

    base = os.environ.get("SLIMLINE_WORKSPACE")
    if base:
        return Path(base).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "Slimline" / "workspace"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "Slimline" / "workspace"
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "slimline" / "workspace"
