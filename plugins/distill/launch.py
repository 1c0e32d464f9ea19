"""Launch data-parallel distillation with torchrun as a child of the step, and follow it.

The step prepares a job folder (ddp.py reads it) and starts torchrun in its own session:
``python -m slimline.plugins.distill.ddp --torchrun --nproc-per-node N … -m slimline.plugins.distill.ddp JOB``,
i.e. torch.distributed.run behind a shim that ends it when the step's process dies. Rank 0's
JSON lines become the step's progress and loss events (the window's charts and the CLI see
the same stream as a local run); cancel terminates the whole launch. The result (rank 0's
weights) is loaded into the student.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from slimline.core.errors import Cancelled, StepFailed
from slimline.plugins.distill.ddp import ERROR, JOB, PREFIX, RESULT, STATE
from slimline.plugins.distill.params import DistillParams

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from slimline.core.handle import ModelHandle
    from slimline.core.plugin import StepContext

STOP_GRACE_S = 3.0


def torchrun_command(p: DistillParams, job_dir: Path) -> list[str]:
    """The launch line for this machine (a multi-machine run starts the same line on every machine)."""
    cmd = [sys.executable, "-m", "slimline.plugins.distill.ddp", "--torchrun", "--nproc-per-node", str(p.nproc)]
    if p.nnodes > 1:
        cmd += ["--nnodes", str(p.nnodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", p.rdzv_endpoint]
    else:
        cmd += ["--standalone"]
    return [*cmd, "-m", "slimline.plugins.distill.ddp", str(job_dir)]


def write_job(job_dir: Path, *, model: ModelHandle, p: DistillParams, device: str, threads: int,
              inputs: dict[str, np.ndarray], labels: np.ndarray | None, teacher: np.ndarray,
              train_idx: np.ndarray, val_idx: np.ndarray, progress_start: float) -> None:
    """Everything the ranks need, as .npy arrays (memory-mapped by each rank) and one JSON file."""
    job_dir.mkdir(parents=True, exist_ok=True)
    for stale in (STATE, RESULT, ERROR):
        (job_dir / stale).unlink(missing_ok=True)
    for i, arr in enumerate(inputs.values()):
        np.save(job_dir / f"input{i}.npy", np.ascontiguousarray(arr))
    if labels is not None:
        np.save(job_dir / "labels.npy", labels)
    np.save(job_dir / "teacher.npy", np.ascontiguousarray(teacher, dtype=np.float32))
    np.save(job_dir / "train_idx.npy", train_idx)
    np.save(job_dir / "val_idx.npy", val_idx)
    doc = {"params": p.model_dump(mode="json"), "model": model.model_dump(mode="json"), "device": device,
           "threads": threads, "input_names": list(inputs), "has_labels": labels is not None,
           "progress_start": progress_start}
    (job_dir / JOB).write_text(json.dumps(doc))


def threads_per_rank(ctx_threads: int | None, nproc: int) -> int:
    """The job's thread budget (all cores when unset) shared by the ranks of this machine."""
    from slimline.core.engines.base import cpu_count

    return max(1, (ctx_threads or cpu_count()) // nproc)


def train_distributed(student: torch.nn.Module, model: ModelHandle, p: DistillParams, ctx: StepContext,
                      device: str, arrays: dict[str, Any], progress_start: float) -> Any:
    """Run the ranks, follow them, load rank 0's weights into ``student``; returns the TrainResult."""
    from slimline.plugins.distill.trainer import Evaluation, TrainResult

    own = not p.job_dir
    job_dir = Path(tempfile.mkdtemp(prefix="slimline-ddp-")) if own else Path(p.job_dir).expanduser()
    if not own:
        job_dir = job_dir / f"job-{os.getpid()}"
    try:
        threads = threads_per_rank(ctx.threads, p.nproc)
        write_job(job_dir, model=model, p=p, device="cuda" if device.startswith("cuda") else "cpu", threads=threads,
                  progress_start=progress_start, **arrays)
        cmd = torchrun_command(p, job_dir)
        if p.nnodes > 1:
            other = " ".join(cmd).replace(sys.executable, "python")
            ctx.log(f"waiting for the other machines; on each one run: {other}")
        ctx.log(f"torchrun: {p.nproc} process(es) × {p.nnodes} machine(s), {threads} thread(s) each, "
                f"backend {'nccl' if device.startswith('cuda') else 'gloo'}")
        _follow(cmd, job_dir, ctx, threads)
        doc = json.loads((job_dir / RESULT).read_text())
        from safetensors.torch import load_file

        student.load_state_dict(load_file(str(job_dir / STATE)))
        student.eval()
        ev = {k: (Evaluation(**doc[k]) if doc.get(k) else None) for k in ("before", "after")}
        return TrainResult(before=ev["before"], after=ev["after"], epochs_run=doc["epochs_run"],
                           best_epoch=doc["best_epoch"], steps=doc["steps"], seconds_per_step=doc["seconds_per_step"],
                           stopped_early=doc["stopped_early"], history=doc["history"])
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


def _follow(cmd: list[str], job_dir: Path, ctx: StepContext, threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    err_path = job_dir / "torchrun.log"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw.decode("utf-8", "replace"))
        lines.put(None)

    threading.Thread(target=read, daemon=True, name="slimline-torchrun-reader").start()
    done = False
    try:
        while not done:
            if ctx.cancel.cancelled:
                raise Cancelled()
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                done = True
            elif line.startswith(PREFIX):
                _forward(json.loads(line[len(PREFIX):]), ctx)
        rc = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    if rc != 0 or not (job_dir / RESULT).is_file():
        _raise_failure(job_dir, rc, err_path)


def _forward(doc: dict[str, Any], ctx: StepContext) -> None:
    kind = doc.get("kind")
    if kind == "progress":
        ctx.progress(float(doc["fraction"]), str(doc.get("message", "")))
    elif kind == "log":
        ctx.log(str(doc.get("payload", {}).get("message", "")))
    elif kind:
        ctx.emit(str(kind), **doc.get("payload", {}))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the launcher and every rank (its session), politely first."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)


def _raise_failure(job_dir: Path, rc: int, err_path: Path) -> None:
    err = job_dir / ERROR
    if err.is_file():
        doc = json.loads(err.read_text())
        failed = StepFailed(f"distributed training failed on rank {doc.get('rank')}: {doc['message']}",
                            subject=doc.get("subject") or "distill (torchrun)",
                            hint=doc.get("hint") or "see the log for every rank's output")
        failed.details = doc.get("details", "")  # type: ignore[attr-defined]
        raise failed
    tail = err_path.read_text(errors="replace")[-3000:] if err_path.is_file() else ""
    failed = StepFailed(f"torchrun exited with code {rc} before writing a result", subject="distill (torchrun)",
                        hint="see the log for torchrun's output; check nproc and that torch.distributed works here")
    failed.details = tail  # type: ignore[attr-defined]
    raise failed
