"""Distillation of causal language models on a text file: token-level KL from the original as teacher.

Why a separate loop from :mod:`.trainer`: an LM's outputs cannot be precomputed for the
whole training set (windows × tokens × vocabulary floats: gigabytes for a 49k vocabulary),
so the teacher runs beside the student on every batch; batches are split into micro-batches
with gradients accumulated, since one window's logits alone are tokens × vocabulary floats.
The loss is the one of :mod:`.loss` applied per token: α·CE(next token) + (1−α)·T²·KL(teacher
‖ student) on temperature-softened distributions. Validation is perplexity on windows held out
from the *training* text (its tail, not shuffled in, so neighbouring text does not leak), the
run's own evaluation text is never trained on. Curves go out live: a "loss" event per
optimizer step, and the validation NLL (log-perplexity, same scale as the loss) as a second
"loss" series plus a "perplexity" event per evaluation.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from slimline.core.errors import SlimlineError, StepFailed
from slimline.core.handle import ModelHandle
from slimline.core.plugin import StepContext, StepOutput
from slimline.plugins._shared import lm
from slimline.plugins.distill.loss import IGNORE_INDEX, distillation_loss
from slimline.plugins.distill.params import DistillParams

if TYPE_CHECKING:  # pragma: no cover
    import torch

VAL_SERIES = "validation NLL (log perplexity)"


def applies(model: ModelHandle, ctx: StepContext) -> bool:
    """The LM loop runs when the student is a causal LM and the training data is a text file."""
    return lm.is_causal_lm(model) and lm.text_source(ctx, ("train",)) is not None


@dataclass
class Perplexity:
    value: float
    nll: float
    tokens: int
    windows: int


@dataclass
class LMTrainResult:
    before: Perplexity
    after: Perplexity
    teacher: Perplexity
    steps: int
    best_step: int
    epochs_run: int
    seconds_per_step: float
    tokens_trained: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)


def run(model: ModelHandle, p: DistillParams, ctx: StepContext, device: str) -> StepOutput:
    """Distil the causal LM ``model`` on the run's training text (see the module doc)."""
    import torch

    old_threads = torch.get_num_threads()
    if ctx.threads:
        torch.set_num_threads(int(ctx.threads))
    try:
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device == "cuda" else []):
            torch.manual_seed(p.seed)
            return _run(model, p, ctx, device)
    finally:
        torch.set_num_threads(old_threads)


def _run(model: ModelHandle, p: DistillParams, ctx: StepContext, device: str) -> StepOutput:
    from slimline.plugins.distill.teacher import resolve_teacher

    if p.student:
        raise StepFailed("a separate student file is not supported for language models", subject="student",
                         hint="leave 'student' empty: the step's input model (e.g. after pruning) is the student")
    src = lm.text_source(ctx, ("train",))
    assert src is not None
    if src.same_as_eval:
        raise StepFailed("the training text is also the evaluation text: the perplexity measured after this "
                         "step would be on text the student was trained on", subject=str(src.path),
                         hint="give two files: --data EVAL.txt --train-data TRAIN.txt")
    win, _ = lm.windows(ctx, model, ("train",), length=p.lm_window_length, count=p.lm_windows,
                        what="LM distillation")
    n_val = int(round(win.count * p.validation_fraction))
    if p.validation_fraction > 0:
        n_val = min(max(n_val, 1), win.count - 1)
    train_ids = win.ids[: win.count - n_val]
    val_ids, val_scored = win.ids[win.count - n_val:], win.scored[win.count - n_val:]
    if len(train_ids) < 1:
        raise StepFailed(f"the text gives {win.count} window(s): none left for training", subject=str(src.path),
                         hint="use a longer text, shorter lm_window_length or a lower validation_fraction")

    teacher_handle = resolve_teacher(p.teacher, model, ctx.source_model)
    warnings: list[str] = []
    if teacher_handle.family != "torch" or not lm.is_causal_lm(teacher_handle):
        raise StepFailed(f"the teacher {teacher_handle.name} is not a torch causal LM", subject="teacher",
                         hint="use the original Hugging Face folder (teacher 'source') for language models")
    if p.learning_rate > 3e-4:
        warnings.append(f"learning_rate {p.learning_rate:g} is high for a language model; 1e-5 … 1e-4 is usual")
    ctx.progress(0.0, "loading student and teacher")
    try:
        student = lm.load_lm(model).to(device)
        teacher = lm.load_lm(teacher_handle).to(device)
    except SlimlineError as exc:
        raise StepFailed(f"cannot load the models: {exc.message}", subject=exc.subject or "distill",
                         hint=exc.hint) from exc
    if _same_file(teacher_handle, model):
        warnings.append("the teacher and the student are the same model (self-distillation)")
    for t in teacher.parameters():
        t.requires_grad_(False)
    for t in student.parameters():
        t.requires_grad_(t.is_floating_point())
    _check_vocab(student, teacher, win.ids[:1], device)
    micro = p.lm_micro_batch or (16 if device == "cuda" else 4)
    result = _train(student, teacher, train_ids, val_ids, val_scored, p, ctx, device, micro)
    ctx.cancel.raise_if_cancelled()
    ctx.progress(0.97, "saving")
    tok_dir = lm.tokenizer_folder(model, ctx)
    out = lm.save_lm(student, model, ctx, tokenizer_dir=tok_dir, name="distilled",
                     extra_meta={"distilled_from": teacher_handle.name})
    ctx.progress(1.0, "done")
    return _report(out, result, win, src, n_val, p, device, micro, teacher_handle, warnings)


def _same_file(a: ModelHandle, b: ModelHandle) -> bool:
    from pathlib import Path

    return Path(a.path).resolve() == Path(b.path).resolve()


def _check_vocab(student: Any, teacher: Any, ids: np.ndarray, device: str) -> None:
    import torch

    x = torch.from_numpy(ids).to(device)
    with torch.no_grad():
        s = student(input_ids=x, use_cache=False).logits.shape[-1]
        t = teacher(input_ids=x, use_cache=False).logits.shape[-1]
    if s != t:
        raise StepFailed(f"the student predicts {s} tokens but the teacher {t}", subject="teacher",
                         hint="use a teacher with the same tokenizer and vocabulary")


def perplexity(module: Any, ids: np.ndarray, scored: np.ndarray, device: str, micro: int) -> Perplexity:
    """exp(mean NLL) over the scored target tokens (the rule of slimline.core.lm.score)."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    module.eval()
    with torch.no_grad():
        for s in range(0, len(ids), micro):
            x = torch.from_numpy(np.ascontiguousarray(ids[s:s + micro])).to(device)
            mask = torch.from_numpy(np.ascontiguousarray(scored[s:s + micro, 1:])).to(device)
            logits = module(input_ids=x, use_cache=False).logits[:, :-1].float()
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
            total += float(nll[mask.reshape(-1)].sum())
            count += int(mask.sum())
    mean = total / max(count, 1)
    return Perplexity(value=math.exp(mean) if count else float("nan"), nll=mean, tokens=count, windows=len(ids))


def _step_loss(student: Any, teacher: Any, x: "torch.Tensor", p: DistillParams) -> Any:
    import torch

    with torch.no_grad():
        t_logits = teacher(input_ids=x, use_cache=False).logits
    s_logits = student(input_ids=x, use_cache=False).logits
    labels = None
    if p.alpha > 0:
        labels = torch.full_like(x, IGNORE_INDEX)
        labels[:, :-1] = x[:, 1:]
    return distillation_loss(s_logits, t_logits, labels, alpha=p.alpha, temperature=p.temperature)


def _optimizer(p: DistillParams, module: Any) -> Any:
    from slimline.plugins.distill.trainer import make_optimizer

    return make_optimizer(p, module)


def _train(student: Any, teacher: Any, train_ids: np.ndarray, val_ids: np.ndarray, val_scored: np.ndarray,
           p: DistillParams, ctx: StepContext, device: str, micro: int) -> LMTrainResult:
    import torch

    has_val = len(val_ids) > 0
    opt = _optimizer(p, student)
    gen = np.random.default_rng(p.seed)
    per_epoch = max(1, math.ceil(len(train_ids) / p.batch_size))
    if p.max_batches_per_epoch:
        per_epoch = min(per_epoch, p.max_batches_per_epoch)
    total = per_epoch * p.epochs
    every = p.lm_eval_every or max(1, total // 10)
    nan = Perplexity(float("nan"), float("nan"), 0, 0)

    def validate(step: int) -> Perplexity:
        ppl = perplexity(student, val_ids, val_scored, device, micro)
        ctx.emit("loss", step=step, value=ppl.nll, series=VAL_SERIES)
        ctx.emit("perplexity", step=step, value=ppl.value, nll=ppl.nll, tokens=ppl.tokens, windows=ppl.windows,
                 split="validation")
        return ppl

    ctx.progress(0.02, "validation perplexity before training")
    before = validate(0) if has_val else nan
    teacher_ppl = perplexity(teacher, val_ids, val_scored, device, micro) if has_val else nan
    best, best_step, best_state = before, 0, (_snapshot(student) if has_val else None)
    step, seconds, since_best, stopped, epochs_run, tokens = 0, 0.0, 0, False, 0, 0
    history: list[dict[str, Any]] = []
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for epoch in range(1, p.epochs + 1):
        order = gen.permutation(len(train_ids))
        epochs_run = epoch
        for b in range(per_epoch):
            rows = order[b * p.batch_size:(b + 1) * p.batch_size]
            if len(rows) == 0:
                break
            student.train()
            sync()
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            parts_sum = np.zeros(3)
            for s in range(0, len(rows), micro):
                ctx.cancel.raise_if_cancelled()
                x = torch.from_numpy(train_ids[np.sort(rows[s:s + micro])]).to(device)
                parts = _step_loss(student, teacher, x, p)
                w = len(x) / len(rows)
                (parts.total * w).backward()
                terms = [parts.total, parts.kd] + ([parts.ce] if parts.ce is not None else [])
                vals = torch.stack([t.detach() for t in terms]).tolist() + [0.0]
                parts_sum += w * np.array(vals[:3])
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            sync()
            seconds += time.perf_counter() - t0
            step += 1
            tokens += int(len(rows) * train_ids.shape[1])
            if not math.isfinite(parts_sum[0]):
                raise StepFailed(f"the loss became {parts_sum[0]} at step {step}", subject="learning_rate",
                                 hint="lower learning_rate and run again")
            ctx.emit("loss", epoch=epoch, batch=b + 1, step=step, value=float(parts_sum[0]),
                     kd=float(parts_sum[1]), ce=float(parts_sum[2]) if p.alpha > 0 else None)
            ctx.progress(0.05 + 0.9 * step / total, f"epoch {epoch}/{p.epochs}, step {step}/{total}")
            row: dict[str, Any] = {"step": step, "epoch": epoch, "train_loss": float(parts_sum[0])}
            if has_val and (step % every == 0 or b == per_epoch - 1):
                ctx.cancel.raise_if_cancelled()
                ev = validate(step)
                row.update(val_perplexity=ev.value, val_nll=ev.nll)
                if ev.nll < best.nll:
                    best, best_step, best_state, since_best = ev, step, _snapshot(student), 0
                else:
                    since_best += 1
                    if since_best >= p.patience:
                        history.append(row)
                        stopped = True
                        break
            history.append(row)
        if stopped:
            break
    if best_state is not None:
        student.load_state_dict(best_state)
    student.eval()
    after = best if has_val else nan
    return LMTrainResult(before=before, after=after, teacher=teacher_ppl, steps=step, best_step=best_step,
                         epochs_run=epochs_run, seconds_per_step=seconds / max(step, 1), tokens_trained=tokens,
                         stopped_early=stopped and step < total, history=history)


def _snapshot(module: Any) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _report(out: ModelHandle, r: LMTrainResult, win: Any, src: lm.TextSource, n_val: int, p: DistillParams,
            device: str, micro: int, teacher: ModelHandle, warnings: list[str]) -> StepOutput:
    metrics: dict[str, float] = {
        "steps": float(r.steps), "best_step": float(r.best_step), "epochs_run": float(r.epochs_run),
        "seconds_per_step": r.seconds_per_step, "tokens_trained": float(r.tokens_trained),
        "train_windows": float(win.count - n_val), "val_windows": float(n_val),
        "device_cuda": float(device == "cuda"),
    }
    notes = [f"language-model distillation on {win.name}: {win.count - n_val} windows × {win.length} tokens for "
             f"training, the last {n_val} held out for validation; {r.steps} optimizer steps of {p.batch_size} "
             f"windows ({r.tokens_trained:,} tokens), {r.seconds_per_step:.2f} s per step on {device} "
             f"(micro-batches of {micro})",
             f"loss per token: {p.alpha:g}·CE(next token) + {1 - p.alpha:g}·T²·KL(teacher ‖ student), T = "
             f"{p.temperature:g}; teacher {teacher.name}"]
    if n_val:
        metrics.update(val_perplexity_before=r.before.value, val_perplexity=r.after.value,
                       teacher_val_perplexity=r.teacher.value, val_tokens=float(r.after.tokens))
        notes.append(f"validation perplexity ({n_val} held-out windows, {r.after.tokens} tokens): student "
                     f"{r.before.value:.3f} → {r.after.value:.3f} (best at step {r.best_step} of {r.steps}; teacher "
                     f"{r.teacher.value:.3f})")
        if r.best_step == 0:
            warnings.append("no step improved the validation perplexity: the output keeps the student's initial "
                            "weights; try a lower learning_rate or more steps")
        if r.stopped_early:
            notes.append(f"early stopping: {p.patience} evaluations without a better validation perplexity")
    else:
        notes.append("validation_fraction is 0: no validation, the last step's weights are kept")
    table = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()} for row in r.history]
    return StepOutput(model=out, metrics=metrics, notes=notes, warnings=warnings, tables={"steps": table})
