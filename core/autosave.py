"""Autosave of the open workspace state, and crash detection on the next start.

The app calls :func:`save_state` on every change (debounced by the caller, e.g. a
500 ms single-shot timer) and :func:`mark_clean_shutdown` when it closes normally.
Each save writes ``<workspace>/autosave.json`` atomically (temp file, fsync, rename):
a kill at any instant leaves either the previous or the new state, never half of one.

On start, :func:`pending_restore` says whether the last session ended without a clean
shutdown (killed, crashed, power loss) and returns what it had open: the model path,
the pipeline document, the data choice and the run ids. Runs themselves live in the
run history (``workspace/runs/<id>/run.json``, rewritten after every finished step), so a
restore loses at most the step that was running; :func:`restore_runs` reads them back.

Standard library only at import time; nothing here imports Qt or the heavy engine modules
(run records are read through slimline.core.history when restoring).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimline.core.fsutil import atomic_write_text

if TYPE_CHECKING:
    from slimline.core.results import RunRecord

FILENAME = "autosave.json"
FORMAT = "slimline.autosave"
VERSION = 1


@dataclass
class WorkspaceState:
    """What the user had open. Everything is plain JSON."""

    model_path: str = ""
    trusted: bool = False
    pipeline: dict[str, Any] | None = None   # the pipeline document (Pipeline.model_dump(mode="json"))
    pipeline_path: str = ""                  # where it was saved, if it was
    pipeline_modified: bool = False
    data_path: str = ""
    train_data_path: str = ""
    dims: dict[str, int] = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)   # runs of this session, oldest first
    running_run_id: str = ""                 # the run in progress when the state was saved
    extra: dict[str, Any] = field(default_factory=dict)  # views may keep small UI state here

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> WorkspaceState:
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        state = cls(**known)
        if not isinstance(state.run_ids, list):
            state.run_ids = []
        state.run_ids = [str(r) for r in state.run_ids]
        if state.pipeline is not None and not isinstance(state.pipeline, dict):
            state.pipeline = None
        return state


@dataclass
class Restore:
    """What :func:`pending_restore` offers after an unclean end."""

    state: WorkspaceState
    saved_at: float
    pid: int
    path: Path

    def describe(self) -> str:
        parts = []
        if self.state.model_path:
            parts.append(f"model {Path(self.state.model_path).name}")
        if self.state.pipeline:
            n = len(self.state.pipeline.get("steps") or [])
            parts.append(f"pipeline '{self.state.pipeline.get('name', 'untitled')}' ({n} steps"
                         + (", unsaved changes)" if self.state.pipeline_modified else ")"))
        if self.state.data_path:
            parts.append(f"data {Path(self.state.data_path).name}")
        if self.state.run_ids:
            parts.append(f"{len(self.state.run_ids)} run(s)")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.saved_at))
        return f"The last session (saved {when}) did not close normally: " + (", ".join(parts) or "nothing open")


def autosave_path(workspace: str | os.PathLike[str]) -> Path:
    return Path(workspace) / FILENAME


def save_state(workspace: str | os.PathLike[str], state: WorkspaceState) -> Path:
    """Write the state atomically, marked as a session in progress (not a clean shutdown)."""
    path = autosave_path(workspace)
    doc = {"format": FORMAT, "version": VERSION, "saved_at": time.time(), "pid": os.getpid(),
           "clean_shutdown": False, "state": asdict(state)}
    atomic_write_text(path, json.dumps(doc, indent=1, default=str))
    return path


def mark_clean_shutdown(workspace: str | os.PathLike[str], state: WorkspaceState | None = None) -> Path | None:
    """Record a normal exit (the next start offers no restore). Keeps the last state for 'reopen'."""
    path = autosave_path(workspace)
    doc = _read(path)
    if state is None and doc is None:
        return None
    out = {"format": FORMAT, "version": VERSION, "saved_at": time.time(), "pid": os.getpid(),
           "clean_shutdown": True,
           "state": asdict(state) if state is not None else (doc or {}).get("state", {})}
    atomic_write_text(path, json.dumps(out, indent=1, default=str))
    return path


def discard(workspace: str | os.PathLike[str]) -> None:
    """The user declined the restore: forget the state."""
    autosave_path(workspace).unlink(missing_ok=True)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("state"), dict):
        return None
    return doc


def _alive(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def pending_restore(workspace: str | os.PathLike[str]) -> Restore | None:
    """The state to offer after an unclean end of the last session, else None.

    None when there is no (readable) autosave, the last session shut down cleanly, or the
    process that wrote it is still running (another window on the same workspace).
    """
    path = autosave_path(workspace)
    doc = _read(path)
    if doc is None or doc.get("clean_shutdown") is True:
        return None
    pid = int(doc.get("pid") or 0)
    if _alive(pid):
        return None
    try:
        state = WorkspaceState.from_dict(doc["state"])
    except TypeError:
        return None
    return Restore(state=state, saved_at=float(doc.get("saved_at") or 0.0), pid=pid, path=path)


def restore_runs(workspace: str | os.PathLike[str], state: WorkspaceState) -> list[RunRecord]:
    """The run records of the restored session (unreadable ones skipped).

    A run that was in progress when the app died is marked ``interrupted`` in memory (its
    finished steps are all in the record; the step that was running is lost).
    """
    from slimline.core.history import load_run, run_dir

    ids = list(state.run_ids)
    if state.running_run_id and state.running_run_id not in ids:
        ids.append(state.running_run_id)
    out = []
    for rid in ids:
        try:
            rec = load_run(run_dir(Path(workspace), rid))
        except (OSError, ValueError):
            continue
        if rec.status == "running":
            rec.status = "interrupted"
        out.append(rec)
    return out
