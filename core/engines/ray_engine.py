"""The Ray engine: each variant is a Ray task with its resource needs; records come back typed.

Connects to ``address`` (``ray start --head`` on this machine, ``auto``, or a remote
``HOST:PORT``; ``$RAY_ADDRESS`` when none is given) or, without one, starts a private
local Ray instance for the sweep. The model, the data and file-valued step parameters
travel by content hash: through Ray's object store (as task arguments, fetched by Ray before
the task starts: a task blocked in ``ray.get`` would lend its CPUs to another task), or a
folder every node can read (``shared_dir``). Each task returns the variant's run record and the files its steps
produced; they land in this machine's workspace (``runs/<run_id>/files/``) with their
paths rewritten, so the run is an ordinary entry of the history.

Tasks run with ``max_retries=0``: a worker that dies (killed, out of memory) makes its
variant fail with the reason instead of silently running it again. ``cancel`` calls
``ray.cancel(ref, force=True)`` on every unfinished task. Ray is imported only here,
inside functions.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slimline.core.engines.base import OnEvent, cpu_count
from slimline.core.engines.errors import RAY_INSTALL_HINT, EngineError
from slimline.core.engines.spec import VariantEvent, VariantOutcome, VariantSpec
from slimline.core.engines.transfer import FileUnit, put_shared, unit_of_path, write_unit
from slimline.core.plugin import CancelToken

POLL_S = 0.2
FILE_UI = ("model_path", "model_path_or_choice")   # json_schema_extra "ui" of file-valued step params


def import_ray() -> Any:
    """The ray module, or EngineError saying what to install."""
    try:
        import ray
    except ImportError:
        raise EngineError("the Ray engine needs the ray package, which is not installed", subject="--engine ray",
                          hint=RAY_INSTALL_HINT) from None
    return ray


class RayEngine:
    """``map`` submits one Ray task per variant; see slimline.core.engines.base for the contract."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, shared_dir: str | None = None,
                 max_retries: int = 0) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.workers = workers
        self.shared_dir = shared_dir
        self.max_retries = max_retries

    def describe(self) -> str:
        where = f"cluster at {self.address}" if self.address else \
            f"a local instance started for this sweep ({self.workers or cpu_count()} CPUs)"
        via = f", files via {self.shared_dir}" if self.shared_dir else ", files via the object store"
        return f"Ray {where}{via}"

    def map(self, specs: Sequence[VariantSpec], *, workspace: Path, on_event: OnEvent | None = None,
            cancel: CancelToken | None = None) -> list[VariantOutcome]:
        ray = import_ray()
        connected_here = not ray.is_initialized()
        if connected_here:
            self._connect(ray)
        try:
            return _Sweep(ray, self, list(specs), Path(workspace), on_event or (lambda _e: None), cancel).run()
        finally:
            if connected_here:
                ray.shutdown()

    def _connect(self, ray: Any) -> None:
        common = {"log_to_driver": False, "configure_logging": False}
        if self.address:
            _check_reachable(self.address)
        try:
            if self.address:
                ray.init(address=self.address, **common)
            else:
                ray.init(num_cpus=self.workers or cpu_count(), include_dashboard=False, **common)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or "a local instance"
            raise EngineError(f"cannot connect to Ray ({where}): {str(exc).splitlines()[0][:300]}",
                              subject="--address",
                              hint="start a cluster with `ray start --head` and pass the address it prints "
                                   "(HOST:6379), or leave --address out to start a private local instance") from None


class _Sweep:
    """One ``map`` call: ship the files, submit, follow events, collect and land the results."""

    def __init__(self, ray: Any, engine: RayEngine, specs: list[VariantSpec], workspace: Path, emit: OnEvent,
                 cancel: CancelToken | None) -> None:
        self.ray, self.engine, self.specs, self.workspace, self.emit = ray, engine, specs, workspace, emit
        self.cancel = cancel
        self.outcomes: dict[int, VariantOutcome] = {}
        self.workers: dict[int, str] = {}
        self.submitted: dict[int, float] = {}      # when the task was handed to Ray
        self.started: dict[int, float] = {}        # when its worker said it started
        self.roots: dict[str, Path] = {}           # unit key → the folder it stands for here
        self.blobs: dict[str, Any] = {}            # sha256 → ObjectRef (object-store mode)

    # -- submit ----------------------------------------------------------------------------------
    def run(self) -> list[VariantOutcome]:
        from ray.util.queue import Queue

        from slimline.core.engines.ray_worker import run_variant_task
        from slimline.core.history import new_run_id

        payloads = [self._payload(i, s, new_run_id()) for i, s in enumerate(self.specs)]
        events = Queue(actor_options={"num_cpus": 0})
        task = self.ray.remote(run_variant_task)
        limit = self.engine.workers or len(self.specs)
        pending = list(range(len(self.specs)))
        refs: dict[Any, int] = {}
        for i in pending:
            self.emit(VariantEvent(kind="queued", index=i, label=self.specs[i].title))
        try:
            while pending or refs:
                if self.cancel is not None and self.cancel.cancelled:
                    self._cancel_all(refs, pending)
                while pending and len(refs) < limit:
                    i = pending.pop(0)
                    spec = self.specs[i]
                    opts = {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus,
                            "max_retries": self.engine.max_retries, "retry_exceptions": False,
                            "name": f"slimline variant {i}: {spec.title}"[:200]}
                    blobs = [self.blobs[d] for d in payloads[i]["blob_order"]]
                    refs[task.options(**opts).remote(payloads[i], events, *blobs)] = i
                    self.submitted[i] = time.perf_counter()
                ready, _ = self.ray.wait(list(refs), num_returns=1, timeout=POLL_S)
                self._drain(events)
                for ref in ready:
                    i = refs.pop(ref)
                    self._finish(i, self._collect(ref, i, payloads[i]))
        except BaseException:  # Ctrl-C or terminated: no task keeps running for a sweep nobody waits on
            self._cancel_all(refs, pending, wait=False)
            raise
        finally:
            self._drain(events)
            try:
                events.shutdown()
            except Exception:  # noqa: BLE001 - the queue actor may be gone with the cluster
                pass
        return [self.outcomes[i] for i in range(len(self.specs))]

    def _payload(self, i: int, spec: VariantSpec, run_id: str) -> dict[str, Any]:
        from slimline.core import __version__

        job = spec.job_spec(workspace="", run_id=run_id, threads=max(1, int(spec.num_cpus)))
        units: dict[str, FileUnit] = {"model": self._ship(spec.model_path, spec.trust)}
        if job["data_path"]:
            units["data"] = self._ship(job["data_path"])
        if job["train_path"]:
            units["train"] = self._ship(job["train_path"])
        for role, path in _param_files(job["pipeline"]).items():
            units[role] = self._ship(path, spec.trust)
        order = sorted({f.sha256 for u in units.values() for f in u.files if f.sha256 in self.blobs})
        return {"index": i, "label": spec.title, "job": job, "units": {k: u.model_dump() for k, u in units.items()},
                "shared_dir": self.engine.shared_dir, "blob_order": order, "version": __version__}

    def _ship(self, path: str, trust: bool = False) -> FileUnit:
        """Hash the files a path means and make their bytes reachable from every node (once per hash)."""
        if not Path(path).exists():
            raise EngineError(f"{path} does not exist", subject=path, hint="check the path")
        unit, sources, root = unit_of_path(path, _companions(path, trust))
        self.roots[unit.key] = root
        if self.engine.shared_dir:
            put_shared(Path(self.engine.shared_dir), sources)
        else:
            for digest, src in sources.items():
                if digest not in self.blobs:
                    self.blobs[digest] = self.ray.put(src.read_bytes())
        return unit

    # -- follow ----------------------------------------------------------------------------------
    def _drain(self, events: Any) -> None:
        try:
            n = events.qsize()
            items = events.get_nowait_batch(n) if n else []
        except Exception:  # noqa: BLE001 - progress is best effort
            return
        for item in items:
            ev = VariantEvent.model_validate(item)
            if ev.worker:
                self.workers[ev.index] = ev.worker
            if ev.kind == "started":
                self.started.setdefault(ev.index, time.perf_counter())
            if ev.index not in self.outcomes:
                self.emit(ev)

    def _cancel_all(self, refs: dict[Any, int], pending: list[int], wait: bool = True) -> None:
        for i in pending:
            self._finish(i, self._outcome(i, "cancelled", reason="cancelled before it started"))
        pending.clear()
        for ref in list(refs):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - finished meanwhile
                pass
        if not wait:
            return
        for ref, i in list(refs.items()):
            self._finish(i, self._collect(ref, i, None))
        refs.clear()

    def _finish(self, i: int, outcome: VariantOutcome) -> None:
        if i in self.outcomes:
            return
        self.outcomes[i] = outcome
        self.emit(VariantEvent(kind="finished", index=i, label=outcome.label, fraction=1.0, worker=outcome.worker,
                               outcome=outcome, message=outcome.reason or outcome.status))

    # -- collect ---------------------------------------------------------------------------------
    def _collect(self, ref: Any, i: int, payload: dict[str, Any] | None) -> VariantOutcome:
        from ray import exceptions as rx

        from slimline.core.engines.ray_worker import TaskResult

        worker = self.workers.get(i, "")
        try:
            result = TaskResult.model_validate(self.ray.get(ref))
        except rx.TaskCancelledError:
            return self._outcome(i, "cancelled", reason="cancelled", worker=worker, payload=payload)
        except (rx.WorkerCrashedError, rx.NodeDiedError, rx.LocalRayletDiedError) as exc:
            return self._outcome(i, "failed", worker=worker, payload=payload,
                                 reason=f"the Ray worker running this variant died ({worker or 'not started'}): "
                                        f"{_first_line(exc)}",
                                 hint="the process was killed or ran out of memory; see the node's Ray logs, "
                                      "then run the variant again")
        except rx.OutOfMemoryError as exc:
            return self._outcome(i, "failed", worker=worker, payload=payload,
                                 reason=f"Ray stopped the worker: out of memory ({_first_line(exc)})",
                                 hint="give the variant more memory (fewer workers per node) or use a bigger node")
        except rx.RayTaskError as exc:
            cause = getattr(exc, "cause", None) or exc
            missing = "No module named 'slimline" in str(exc)
            return self._outcome(i, "failed", worker=worker, payload=payload, reason=_first_line(cause),
                                 hint="install slimline (same version) on every node: pip install slimline[ray]"
                                 if missing else "see the worker's log on the node")
        except rx.RayError as exc:
            return self._outcome(i, "failed", worker=worker, payload=payload, reason=_first_line(exc),
                                 hint="check the cluster (`ray status`) and run again")
        record = self._land(result) if result.record is not None else None
        return self._outcome(i, result.status, worker=result.worker or worker, record=record,
                             reason=result.reason, hint=result.hint, payload=payload if record is None else None)

    def _land(self, result: Any) -> Any:
        """Write the produced files into ``runs/<run_id>/files`` and save the record with this machine's paths."""
        from slimline.core.engines.transfer import read_shared
        from slimline.core.history import run_dir, save_run
        from slimline.core.results import run_from_dict

        run_id = result.record["run_id"]
        files_dir = run_dir(self.workspace, run_id) / "files"
        mapping: list[tuple[str, str]] = []
        if result.outputs is not None and result.outputs.files:
            fetch = read_shared(Path(self.engine.shared_dir)) if self.engine.shared_dir else result.blobs.__getitem__
            write_unit(result.outputs, files_dir, fetch)
            mapping.append((result.workspace, str(files_dir.resolve())))
        for node_dir in result.unit_dirs.values():
            key = Path(node_dir).name
            if key in self.roots:
                mapping.append((node_dir, str(self.roots[key])))
        record = run_from_dict(remap(result.record, mapping))
        save_run(self.workspace, record)
        return record

    def _outcome(self, i: int, status: str, *, payload: dict[str, Any] | None = None, **fields: Any) -> VariantOutcome:
        """A typed outcome; a variant that ran but sent no record still gets one in the history."""
        spec = self.specs[i]
        t0 = self.started.get(i, self.submitted.get(i))
        wall = time.perf_counter() - t0 if t0 is not None else 0.0
        record = fields.pop("record", None)
        ran = i in self.started or (status == "failed" and i in self.submitted)
        if record is None and payload is not None and status != "done" and ran:
            record = self._stub_record(spec, payload, status, fields.get("reason", ""), fields.get("hint", ""))
        return VariantOutcome(index=i, label=spec.title, settings=dict(spec.settings), status=status,
                              run_id=record.run_id if record is not None else "", record=record, wall_s=wall,
                              engine="ray", **fields)

    def _stub_record(self, spec: VariantSpec, payload: dict[str, Any], status: str, reason: str, hint: str) -> Any:
        from slimline.core.history import save_run
        from slimline.core.results import RunData, RunError, RunRecord

        job = payload["job"]
        record = RunRecord(run_id=job["run_id"], created=time.strftime("%Y-%m-%dT%H:%M:%S"), status=status,
                           pipeline=job["pipeline"], data=RunData(eval=job["data_path"], train=job["train_path"]),
                           error=RunError(message=reason, hint=hint, subject="ray worker") if status == "failed"
                           else None)
        save_run(self.workspace, record)
        return record


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail at once when nothing listens at HOST:PORT (ray.init would retry for minutes)."""
    import socket

    host, sep, port = address.rpartition(":")
    if address == "auto" or "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise EngineError(f"nothing answers at {address} ({exc.strerror or exc})", subject="--address",
                          hint="check the address `ray start --head` printed (HOST:6379), that the head runs "
                               "and that this machine can reach it") from None


def remap(obj: Any, mapping: list[tuple[str, str]]) -> Any:
    """Replace path prefixes in every string of a JSON document (longest prefix first)."""
    pairs = sorted(mapping, key=lambda p: -len(p[0]))
    if isinstance(obj, dict):
        return {k: remap(v, pairs) for k, v in obj.items()}
    if isinstance(obj, list):
        return [remap(v, pairs) for v in obj]
    if isinstance(obj, str):
        for src, dst in pairs:
            if obj == src or obj.startswith(src.rstrip("/") + "/"):
                return dst + obj[len(src):]
    return obj


def _param_files(pipeline: dict[str, Any]) -> dict[str, str]:
    """``param:STEP.FIELD`` → path for step parameters that name model files (teacher, student)."""
    from slimline.core.registry import discover

    registry = discover()
    found: dict[str, str] = {}
    for step in pipeline.get("steps", []):
        entry = registry.get(step.get("plugin", ""))
        if entry is None or entry.plugin is None or not step.get("enabled", True):
            continue
        props = entry.plugin.Params.model_json_schema().get("properties", {})
        for name, value in step.get("params", {}).items():
            ui = (props.get(name) or {}).get("ui")
            if ui in FILE_UI and isinstance(value, str) and value and Path(value).expanduser().exists():
                found[f"param:{step['id']}.{name}"] = str(Path(value).expanduser().resolve())
    return found


def _companions(path: str, trust: bool) -> list[str]:
    """Files a model file needs beside itself (ONNX external data), from the model's own handle."""
    p = Path(path)
    if p.is_dir() or p.suffix.lower() != ".onnx":
        return []
    try:
        from slimline.core.models import open_model

        return list(open_model(p, trust=trust).files)
    except Exception:  # noqa: BLE001 - the worker reports an unreadable model with its own message
        return []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if "Traceback" in text and lines else (lines[0] if lines else type(exc).__name__))[:400]
