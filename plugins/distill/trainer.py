"""The training loop: per-batch loss events, per-epoch validation, early stopping, best weights.

Everything the loop needs lives in tensors prepared once (inputs, labels,
teacher logits), so the per-step overhead over a bare torch loop stays small.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from slimline.core.errors import StepFailed
from slimline.plugins.distill.loss import IGNORE_INDEX, distillation_loss
from slimline.plugins.distill.parallel import Parallel
from slimline.plugins.distill.params import DistillParams
from slimline.plugins.distill.torchio import call_module

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from slimline.core.plugin import StepContext

_ON_DEVICE_LIMIT = 1 << 30  # move the whole training set to the device when it is smaller


@dataclass
class Tensors:
    """Training rows as torch tensors (names in the model's input order)."""

    inputs: dict[str, "torch.Tensor"]
    labels: "torch.Tensor | None"
    teacher: "torch.Tensor"
    train_idx: "torch.Tensor"
    val_idx: "torch.Tensor"


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    n: int


@dataclass
class TrainResult:
    before: Evaluation | None
    after: Evaluation | None
    epochs_run: int
    best_epoch: int
    steps: int
    seconds_per_step: float
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)


def make_optimizer(params: DistillParams, module: "torch.nn.Module") -> "torch.optim.Optimizer":
    import torch

    trainable = [p for p in module.parameters() if p.requires_grad]
    if not trainable:
        raise StepFailed("the student has no trainable parameters", subject="student",
                         hint="use a student with float weights (not a quantized model)")
    if params.optimizer == "sgd":
        return torch.optim.SGD(trainable, lr=params.learning_rate, momentum=0.9, weight_decay=params.weight_decay)
    cls = torch.optim.AdamW if params.optimizer == "adamw" else torch.optim.Adam
    return cls(trainable, lr=params.learning_rate, weight_decay=params.weight_decay)


def to_tensors(inputs: dict[str, np.ndarray], labels: np.ndarray | None, teacher: np.ndarray,
               train_idx: np.ndarray, val_idx: np.ndarray, device: str) -> Tensors:
    """Put the data on the training device once (when it fits), else keep it on the CPU."""
    import torch

    total = sum(a.nbytes for a in inputs.values()) + teacher.nbytes
    where = device if total <= _ON_DEVICE_LIMIT else "cpu"

    def t(a: np.ndarray) -> "torch.Tensor":
        return torch.from_numpy(np.ascontiguousarray(a)).to(where)

    return Tensors(
        inputs={k: t(v) for k, v in inputs.items()},
        labels=None if labels is None else t(labels.astype(np.int64)),
        teacher=t(teacher.astype(np.float32)),
        train_idx=torch.from_numpy(train_idx).to(where),
        val_idx=torch.from_numpy(val_idx).to(where),
    )


def _batch(data: Tensors, idx: "torch.Tensor", device: str) -> tuple[dict, "torch.Tensor | None", "torch.Tensor"]:
    feeds = {k: v[idx].to(device, non_blocking=True) for k, v in data.inputs.items()}
    labels = None if data.labels is None else data.labels[idx].to(device, non_blocking=True)
    return feeds, labels, data.teacher[idx].to(device, non_blocking=True)


def evaluate(student: "torch.nn.Module", data: Tensors, idx: "torch.Tensor", params: DistillParams,
             device: str) -> Evaluation:
    """Distillation loss and accuracy (top-1 vs labels, or agreement with the teacher's top-1)."""
    import torch

    student.eval()
    total_loss, correct, counted, rows = 0.0, 0, 0, 0
    bs = max(params.batch_size, 256)
    with torch.no_grad():
        for start in range(0, len(idx), bs):
            sel = idx[start:start + bs]
            feeds, labels, teach = _batch(data, sel, device)
            logits = call_module(student, feeds)
            parts = distillation_loss(logits, teach, labels, alpha=params.alpha, temperature=params.temperature)
            total_loss += float(parts.total) * len(sel)
            rows += len(sel)
            pred = logits.reshape(-1, logits.shape[-1]).argmax(-1)
            if labels is not None:
                target = labels.reshape(-1)
                keep = target != IGNORE_INDEX
                correct += int((pred[keep] == target[keep]).sum())
                counted += int(keep.sum())
            else:
                target = teach.reshape(-1, teach.shape[-1]).argmax(-1)
                correct += int((pred == target).sum())
                counted += int(pred.numel())
    return Evaluation(loss=total_loss / max(rows, 1), accuracy=correct / max(counted, 1), n=counted)


def _epoch_batches(data: Tensors, params: DistillParams, gen: "torch.Generator",
                   min_rows: int = 2) -> list["torch.Tensor"]:
    """The epoch's global batches (the same for one process and for N ranks, which split each one)."""
    import torch

    n = len(data.train_idx)
    perm = data.train_idx[torch.randperm(n, generator=gen).to(data.train_idx.device)]
    bs = params.batch_size
    batches = [perm[i:i + bs] for i in range(0, n, bs)]
    if len(batches) > 1 and len(batches[-1]) < min_rows:  # BatchNorm cannot train on a single row (per rank)
        batches.pop()
    if params.max_batches_per_epoch:
        batches = batches[:params.max_batches_per_epoch]
    return batches


def _better(ev: Evaluation, best: Evaluation | None) -> bool:
    if best is None:
        return True
    return ev.accuracy > best.accuracy or (ev.accuracy == best.accuracy and ev.loss < best.loss)


def train(student: "torch.nn.Module", data: Tensors, params: DistillParams, ctx: "StepContext",
          device: str, *, progress_start: float = 0.0, parallel: Parallel | None = None) -> TrainResult:
    """Distil into ``student`` in place; on return it holds the best-validation weights.

    ``parallel`` (torchrun ranks, see :mod:`.parallel`): every rank trains its share of each
    batch; rank 0 validates, reports and ends up with the best weights. The global RNG is
    seeded here, so dropout depends on the seed alone, not on what was built before.
    """
    import torch

    par = parallel or Parallel()
    torch.manual_seed(params.seed)
    net = par.wrap(student, device)
    has_val = len(data.val_idx) > 0
    main_val = has_val and par.is_main
    optimizer = make_optimizer(params, student)
    gen = torch.Generator().manual_seed(params.seed)
    before = evaluate(student, data, data.val_idx, params, device) if main_val else None
    best, best_epoch = before, 0
    best_state = _snapshot(student) if main_val else None
    min_rows = par.min_batch()
    n_batches = len(_epoch_batches(data, params, torch.Generator().manual_seed(params.seed), min_rows))
    total_steps = max(1, n_batches * params.epochs)
    step, train_seconds, epochs_run, stopped_early = 0, 0.0, 0, False
    history: list[dict[str, Any]] = []
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for epoch in range(1, params.epochs + 1):
        net.train()
        batches = _epoch_batches(data, params, gen, min_rows)
        loss_sum, rows = 0.0, 0
        sync()
        t0 = time.perf_counter()
        for b, idx in enumerate(batches, start=1):
            ctx.cancel.raise_if_cancelled()
            feeds, labels, teach = _batch(data, par.shard(idx), device)
            parts = distillation_loss(call_module(net, feeds), teach, labels,
                                      alpha=params.alpha, temperature=params.temperature)
            optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            optimizer.step()
            step += 1
            terms = (parts.total, parts.kd) + ((parts.ce,) if parts.ce is not None else ())
            vals = par.mean(torch.stack([p.detach() for p in terms])).tolist()
            if not math.isfinite(vals[0]):
                raise StepFailed(f"the loss became {vals[0]} at epoch {epoch}, batch {b}",
                                 subject="learning_rate", hint="lower learning_rate or temperature and run again")
            if par.is_main:
                ctx.emit("loss", epoch=epoch, batch=b, step=step, value=vals[0],
                         ce=vals[2] if len(vals) > 2 else None, kd=vals[1])
                ctx.progress(progress_start + (1 - progress_start) * step / total_steps,
                             f"epoch {epoch}/{params.epochs}, batch {b}/{len(batches)}")
            loss_sum += vals[0] * len(idx)
            rows += len(idx)
        sync()
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        epochs_run = epoch
        row: dict[str, Any] = {"epoch": epoch, "train_loss": loss_sum / max(rows, 1), "seconds": seconds}
        if has_val:
            ctx.cancel.raise_if_cancelled()
            stop = False
            if par.is_main:
                ev = evaluate(student, data, data.val_idx, params, device)
                row.update(val_loss=ev.loss, val_accuracy=ev.accuracy, val_n=ev.n)
                ctx.emit("validation", epoch=epoch, accuracy=ev.accuracy, loss=ev.loss, n=ev.n)
                if _better(ev, best):
                    best, best_epoch, best_state = ev, epoch, _snapshot(student)
                elif epoch - best_epoch >= params.patience:
                    stop = True
            if par.agree(stop):
                history.append(row)
                stopped_early = epoch < params.epochs
                break
        history.append(row)
    if best_state is not None:
        student.load_state_dict(best_state)
    else:
        best_epoch = epochs_run
    student.eval()
    return TrainResult(before=before, after=best, epochs_run=epochs_run, best_epoch=best_epoch, steps=step,
                       seconds_per_step=train_seconds / max(step, 1), stopped_early=stopped_early, history=history)


def _snapshot(module: "torch.nn.Module") -> dict[str, "torch.Tensor"]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
