"""Data-parallel distillation with torchrun (gloo on CPU): same student as one process, events, cancel, failures."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from slimline.core.errors import Cancelled, StepFailed
from slimline.core.handle import TensorSpec
from slimline.core.plugin import CancelToken, StepContext
from slimline.plugins.distill import Distill
from slimline.plugins.distill.launch import torchrun_command
from slimline.plugins.distill.params import DistillParams

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed.run")

IN = [TensorSpec(name="x", dtype="float32", shape=["batch", 64])]
OUT = [TensorSpec(name="logits", dtype="float32", shape=["batch", 10])]
PARAMS = {"epochs": 10, "batch_size": 64, "learning_rate": 5e-3, "device": "cpu", "patience": 20}


class Digits:
    """sklearn's 8×8 digits: 1300 training rows (10 % of them held out by the step), 497 test rows."""

    def __init__(self) -> None:
        from sklearn.datasets import load_digits

        d = load_digits()
        x, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
        order = np.random.default_rng(1).permutation(len(y))
        self.xtr, self.ytr, self.xte, self.yte = x[order[:1300]], y[order[:1300]], x[order[1300:]], y[order[1300:]]
        self.name, self.kind, self.inputs, self.labels = "digits 8x8 train", "real", {"x": self.xtr}, self.ytr

    def __len__(self) -> int:
        return len(self.ytr)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A trained MLP teacher and an untrained student with BatchNorm and Dropout (per-rank effects show)."""
    from slimline.core.torchmodel import save_torch_module

    d, data = tmp_path_factory.mktemp("ddp"), Digits()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same teacher whatever the machine's core count (the figures are compared)
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    x, y = torch.from_numpy(data.xtr), torch.from_numpy(data.ytr)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(teacher(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    student = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                                  torch.nn.Dropout(0.1), torch.nn.Linear(32, 10))
    return {"teacher": save_torch_module(teacher.eval(), d / "teacher.safetensors", inputs=IN, outputs=OUT),
            "student": save_torch_module(student.eval(), d / "student.safetensors", inputs=IN, outputs=OUT),
            "data": data, "dir": d}


def run(setup, tmp_path: Path, events: list | None = None, cancel: CancelToken | None = None, **params):
    ctx = StepContext(work_dir=tmp_path / f"work-{len(list(tmp_path.glob('work-*')))}", cancel=cancel or CancelToken(),
                      data=SimpleNamespace(train=setup["data"], eval=None, calibration=None),
                      source_model=setup["teacher"], threads=1,
                      event_cb=(lambda k, p: events.append((k, p))) if events is not None else None)
    t0 = time.perf_counter()
    out = Distill().run(setup["student"], DistillParams(**{**PARAMS, **params}), ctx)
    return out, time.perf_counter() - t0


def weights_and_accuracy(out, data: Digits) -> tuple[dict, float]:
    from slimline.core.torchmodel import load_torch_module

    m = load_torch_module(out.model).eval()
    with torch.no_grad():
        acc = float((m(torch.from_numpy(data.xte)).argmax(1).numpy() == data.yte).mean())
    return {k: v.clone() for k, v in m.state_dict().items()}, acc


@pytest.fixture(scope="module")
def one_process(setup, tmp_path_factory):
    out, wall = run(setup, tmp_path_factory.mktemp("local"))
    return out, wall, *weights_and_accuracy(out, setup["data"])


def test_torchrun_with_one_process_trains_the_same_student_as_in_process(setup, one_process, tmp_path):
    events: list = []
    out, wall = run(setup, tmp_path, events=events, engine="torchrun", nproc=1)
    w, acc = weights_and_accuracy(out, setup["data"])
    w0, acc0 = one_process[2], one_process[3]
    diff = max(float((w[k] - w0[k]).abs().max()) for k in w0)
    assert diff < 1e-5 and acc == acc0, (diff, acc, acc0)
    # rank 0's progress reached the step: a loss point per optimizer step and a validation per epoch
    assert sum(k == "loss" for k, _ in events) == out.metrics["steps"] > 0
    assert [p["epoch"] for k, p in events if k == "validation"] == list(range(1, 11))
    assert out.metrics["processes"] == 1.0 and any("torchrun" in n for n in out.notes)


def test_two_processes_give_the_one_process_accuracy_within_half_a_point(setup, one_process, tmp_path):
    out, wall = run(setup, tmp_path, engine="torchrun", nproc=2)
    _, acc = weights_and_accuracy(out, setup["data"])
    acc0 = one_process[3]
    print(f"\ndistill, digits 8x8 test rows n={len(setup['data'].yte)}: 1 process top-1 {acc0:.4f} "
          f"({one_process[0].metrics['seconds_per_epoch']:.3f} s/epoch, 1 thread); torchrun 2 processes top-1 "
          f"{acc:.4f} ({out.metrics['seconds_per_epoch']:.3f} s/epoch, 1 thread each)")
    assert abs(acc - acc0) <= 0.005 and acc > 0.9
    assert out.metrics["processes"] == 2.0


def test_cancel_stops_every_rank(setup, tmp_path):
    import psutil

    cancel = CancelToken()
    events: list = []
    me = psutil.Process()
    before = {c.pid for c in me.children(recursive=True)}  # e.g. multiprocessing's resource tracker

    def cancel_once_training():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(k == "loss" for k, _ in events):
            time.sleep(0.05)
        cancel.cancel()

    threading.Thread(target=cancel_once_training, daemon=True).start()
    t0 = time.perf_counter()
    with pytest.raises(Cancelled):
        run(setup, tmp_path, events=events, cancel=cancel, engine="torchrun", nproc=2, epochs=1000)
    assert time.perf_counter() - t0 < 130
    time.sleep(0.5)
    left = [c for c in me.children(recursive=True)
            if c.pid not in before and c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert left == [], [c.cmdline()[:4] for c in left]


def test_a_rank_failure_names_the_cause(setup, tmp_path):
    broken = Digits()
    broken.xtr = broken.xtr.copy()
    broken.xtr[:, 5] = np.nan  # every batch: the loss is NaN from the first step, in every rank
    broken.inputs = {"x": broken.xtr}
    with pytest.raises(StepFailed) as err:
        run({**setup, "data": broken}, tmp_path, engine="torchrun", nproc=2)
    assert "distributed training failed on rank" in err.value.message and "loss became nan" in err.value.message
    assert err.value.hint == "lower learning_rate or temperature and run again"


def test_multi_machine_launch_line_and_checks():
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        DistillParams(engine="torchrun", nnodes=2)
    p = DistillParams(engine="torchrun", nproc=4, nnodes=2, rdzv_endpoint="10.0.0.1:29500", job_dir="/shared/j")
    cmd = torchrun_command(p, Path("/shared/j/job-1"))
    assert cmd[1:] == ["-m", "slimline.plugins.distill.ddp", "--torchrun", "--nproc-per-node", "4", "--nnodes", "2",
                       "--rdzv-backend", "c10d", "--rdzv-endpoint", "10.0.0.1:29500", "-m",
                       "slimline.plugins.distill.ddp", "/shared/j/job-1"]
    assert "--standalone" in torchrun_command(DistillParams(engine="torchrun"), Path("/tmp/j"))
