"""The body of one Ray task: run a variant on whatever node Ray chose, send back its record and models.

Runs in a Ray worker process (slimline must be installed there, same version as the
submitting machine). The model and data arrive as content-hash units and are built
once per node under ``$SLIMLINE_RAY_ROOT`` (default ``~/.cache/slimline/ray``); the run
uses a node-local workspace there (its step cache is reused by later variants on that
node). The worker's own run folder is removed once the record is on its way back:
the submitting machine's workspace is the one history.
"""
from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from slimline.core.engines.transfer import FileUnit, materialize, put_shared, read_shared, unit_of_files

ROOT_ENV = "SLIMLINE_RAY_ROOT"
PROGRESS_EVERY_S = 0.5


class TaskPayload(BaseModel):
    """What the driver sends with each task (paths replaced by unit roles)."""

    index: int
    label: str
    job: dict[str, Any]                       # slimline.core.jobs spec, paths filled in on the node
    units: dict[str, FileUnit]                # role ("model", "data", "train", "param:s2.teacher") → unit
    shared_dir: str | None = None
    blob_order: list[str] = Field(default_factory=list)   # sha256 of each blob argument, in order
    version: str = ""                         # slimline version of the driver


class TaskResult(BaseModel):
    """What a task returns: the record as JSON, the produced files as a unit, where it ran."""

    index: int
    status: str
    record: dict[str, Any] | None = None
    reason: str = ""
    hint: str = ""
    outputs: FileUnit | None = None
    blobs: dict[str, bytes] = Field(default_factory=dict)   # object-store mode: the output bytes
    workspace: str = ""                                     # the node's workspace (paths to map back)
    unit_dirs: dict[str, str] = Field(default_factory=dict)  # role → folder on the node
    worker: str = ""
    pid: int = 0


def node_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or Path.home() / ".cache" / "slimline" / "ray").expanduser()


def run_variant_task(payload_doc: dict[str, Any], events: Any, *blobs: bytes) -> dict[str, Any]:
    """The Ray task (``ray.remote`` is applied by the driver, so this module never imports Ray at top level).

    Never blocks in ``ray.get``: Ray lends a blocked task's CPUs to other tasks, so a node would run
    more variants than it has CPUs. The blobs arrive as arguments (Ray fetches them before the task
    starts; ``payload.blob_order`` names them) and progress goes out as fire-and-forget actor calls.
    """
    import ray

    from slimline.core import __version__

    p = TaskPayload.model_validate(payload_doc)
    received = dict(zip(p.blob_order, blobs))
    pid, host = os.getpid(), socket.gethostname()
    node = ray.get_runtime_context().get_node_id()[:8]
    worker = f"ray node {node} pid {pid} ({host})"
    send = _Sender(events, p.index, p.label, worker, pid)
    send.now("started", 0.0, "started")
    if p.version and p.version != __version__:
        return TaskResult(index=p.index, status="failed", worker=worker, pid=pid,
                          reason=f"this node runs slimline {__version__}, the sweep was submitted by {p.version}",
                          hint="install the same slimline version on every node of the cluster").model_dump()
    root = node_root()
    fetch = read_shared(Path(p.shared_dir)) if p.shared_dir else received.__getitem__
    send.now("progress", 0.0, "fetching the model and data")
    dirs = {role: materialize(unit, root, fetch) for role, unit in p.units.items()}
    paths = {role: str(dirs[role] / unit.main) for role, unit in p.units.items()}
    spec = _fill_paths(p.job, paths)
    workspace = root / "workspace"
    spec["workspace"] = str(workspace)
    return _run(spec, p, send, workspace, dirs, worker, pid)


def _run(spec: dict[str, Any], p: TaskPayload, send: Any, workspace: Path, dirs: dict[str, Path],
         worker: str, pid: int) -> dict[str, Any]:
    from slimline.core.errors import SlimlineError
    from slimline.core.history import load_run, run_dir
    from slimline.core.jobs import run_spec_inline
    from slimline.core.plugin import CancelToken

    status, reason, hint = "done", "", ""
    record = None
    try:
        record = run_spec_inline(spec, send.event, CancelToken())
        status = record.status if record.status in ("done", "failed") else "done"
    except SlimlineError as exc:
        status, reason, hint = "failed", str(exc.message), exc.hint
        where = exc.subject or getattr(exc, "step_id", "")
        reason = f"{where}: {reason}" if where else reason
    except Exception as exc:  # a plugin bug: the variant fails with its reason, the sweep goes on
        status, reason, hint = "failed", f"{type(exc).__name__}: {exc}", "see the worker's log on the node"
    if record is None:
        try:
            record = load_run(run_dir(workspace, spec["run_id"]))
        except (OSError, ValueError):
            record = None
    outputs, blobs = None, {}
    if record is not None:
        files = [Path(f) for r in record.results[1:] for f in (r.model.files or [r.model.path])
                 if Path(f).is_file() and _inside(Path(f), workspace)]
        unit, sources = unit_of_files(workspace, files)
        outputs = unit
        if p.shared_dir:
            put_shared(Path(p.shared_dir), sources)
        else:
            blobs = {digest: src.read_bytes() for digest, src in sources.items()}
    shutil.rmtree(run_dir(workspace, spec["run_id"]), ignore_errors=True)
    send.now("progress", 1.0, status)
    return TaskResult(index=p.index, status=status, record=record.to_dict() if record is not None else None,
                      reason=reason, hint=hint, outputs=outputs, blobs=blobs, workspace=str(workspace.resolve()),
                      unit_dirs={role: str(d.resolve()) for role, d in dirs.items()}, worker=worker,
                      pid=pid).model_dump()


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _fill_paths(job: dict[str, Any], paths: dict[str, str]) -> dict[str, Any]:
    """The job spec with the node's paths for the model, the data and file-valued step parameters."""
    import copy

    spec = copy.deepcopy(job)
    spec["model_path"] = paths["model"]
    spec["data_path"] = paths.get("data")
    spec["train_path"] = paths.get("train")
    ev = spec["pipeline"].setdefault("evaluation", {})
    ev["data"], ev["train_data"] = paths.get("data"), paths.get("train")
    for role, path in paths.items():
        if role.startswith("param:"):
            step_id, _, field = role.removeprefix("param:").partition(".")
            for step in spec["pipeline"]["steps"]:
                if step["id"] == step_id:
                    step["params"][field] = path
    return spec


class _Sender:
    """Variant news into the driver's queue actor: started at once, progress at most every 0.5 s."""

    def __init__(self, queue: Any, index: int, label: str, worker: str, pid: int) -> None:
        self.queue, self.index, self.label, self.worker, self.pid = queue, index, label, worker, pid
        self.last = 0.0
        self.overall = 0.0

    def now(self, kind: str, fraction: float, message: str) -> None:
        if self.queue is None:
            return
        try:  # the queue actor's method, not Queue.put_nowait (which waits in ray.get for the answer)
            self.queue.actor.put_nowait.remote({"kind": kind, "index": self.index, "label": self.label,
                                                "fraction": fraction, "message": message, "worker": self.worker,
                                                "pid": self.pid})
        except Exception:  # noqa: BLE001 - progress is best effort; the result still comes back
            self.queue = None
        self.last = time.monotonic()

    def event(self, ev: Any) -> None:
        """The pipeline's emit(): progress and step starts become throttled variant progress."""
        kind = getattr(ev, "type", "")
        if kind == "progress":
            self.overall = float(ev.overall)
            msg = f"{ev.step_id}: {ev.message}"
        elif kind == "step_started":
            self.overall = ev.index / max(ev.total, 1)
            msg = f"{ev.step_id}: {ev.title}"
        else:
            return
        if time.monotonic() - self.last >= PROGRESS_EVERY_S:
            self.now("progress", self.overall, msg)
