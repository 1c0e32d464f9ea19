"""One rank of a data-parallel distillation: ``torchrun … -m slimline.plugins.distill.ddp JOB_DIR``.

The distill step (launch.py) prepares JOB_DIR once: the parameters, the student's handle,
the training rows and the teacher's logits (computed once, by the step). Every rank loads
the same student, trains its share of each global batch under DDP (gloo on CPU, nccl on
CUDA), and rank 0 reports progress as JSON lines on stdout and writes the trained weights
and the training summary into JOB_DIR, each file atomically. A failure is written to
``error.json`` (by whichever rank hit it) and the process exits non-zero.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from slimline.core.fsutil import atomic_path, atomic_write_text

PREFIX = "@@slimline-ddp "
JOB, STATE, RESULT, ERROR = "job.json", "student.safetensors", "result.json", "error.json"


def die_with_parent() -> None:
    """Linux: end this process when its parent dies (a killed job must not leave ranks waiting forever)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except OSError:
            pass


class _Reporter:
    """StepContext callbacks of rank 0: JSON lines on stdout (the step reads them); progress ≤ 10/s."""

    def __init__(self, main: bool) -> None:
        self.main, self.last = main, 0.0

    def _line(self, doc: dict[str, Any]) -> None:
        if self.main:
            sys.stdout.write(PREFIX + json.dumps(doc) + "\n")
            sys.stdout.flush()

    def progress(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self.last >= 0.1 or fraction >= 1.0:
            self.last = now
            self._line({"kind": "progress", "fraction": fraction, "message": message})

    def event(self, kind: str, payload: dict[str, Any]) -> None:
        self._line({"kind": kind, "payload": payload})


def load_arrays(job_dir: Path, job: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray,
                                                            np.ndarray, np.ndarray]:
    def arr(name: str) -> np.ndarray:
        return np.load(job_dir / f"{name}.npy", mmap_mode="r")

    inputs = {name: arr(f"input{i}") for i, name in enumerate(job["input_names"])}
    labels = arr("labels") if job["has_labels"] else None
    return inputs, labels, arr("teacher"), np.asarray(arr("train_idx")), np.asarray(arr("val_idx"))


def run(job_dir: Path) -> None:
    import torch
    import torch.distributed as dist

    from slimline.core.handle import ModelHandle
    from slimline.core.plugin import StepContext
    from slimline.plugins.distill import trainer
    from slimline.plugins.distill.parallel import Parallel
    from slimline.plugins.distill.params import DistillParams
    from slimline.plugins.distill.plugin import load_student

    job = json.loads((job_dir / JOB).read_text())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = job["device"] == "cuda"
    device = f"cuda:{local_rank}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(local_rank)
    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        par = Parallel.from_env()
        params = DistillParams.model_validate(job["params"])
        _, student = load_student(ModelHandle.model_validate(job["model"]), params, device)
        inputs, labels, teach, train_idx, val_idx = load_arrays(job_dir, job)
        data = trainer.to_tensors(inputs, labels, teach, train_idx, val_idx, device)
        rep = _Reporter(par.is_main)
        ctx = StepContext(work_dir=job_dir, progress_cb=rep.progress, event_cb=rep.event, device=device)
        result = trainer.train(student, data, params, ctx, device, progress_start=float(job["progress_start"]),
                               parallel=par)
        if par.is_main:
            from safetensors.torch import save_file

            state = {k: v.detach().cpu().contiguous().clone() for k, v in student.state_dict().items()}
            with atomic_path(job_dir / STATE) as tmp:
                save_file(state, str(tmp))
            doc = {**dataclasses.asdict(result), "world_size": par.world}
            atomic_write_text(job_dir / RESULT, json.dumps(doc))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def torchrun(args: list[str]) -> int:
    """``--torchrun ARGS``: torch.distributed.run, ended when the process that launched it dies."""
    import runpy

    import torch.distributed.run  # noqa: F401 - named here so the bundle's module list holds torchrun

    die_with_parent()
    sys.argv = ["torchrun", *args]
    try:
        runpy.run_module("torch.distributed.run", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--torchrun"]:
        return torchrun(args[1:])
    die_with_parent()
    job_dir = Path(args[0])
    try:
        run(job_dir)
    except BaseException as exc:
        doc = {"message": getattr(exc, "message", "") or f"{type(exc).__name__}: {exc}",
               "hint": getattr(exc, "hint", ""), "subject": getattr(exc, "subject", ""),
               "rank": os.environ.get("RANK", "0"), "details": traceback.format_exc()}
        try:
            atomic_write_text(job_dir / ERROR, json.dumps(doc))
        except OSError:
            pass
        print(doc["details"], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
