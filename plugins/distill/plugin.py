"""Knowledge distillation step: train the pipeline's model (the student) to match a teacher.

Typical use: recover the accuracy lost by pruning or low-rank factorization,
with the original model as the teacher. The loss and its knobs are in
:mod:`.loss` and :mod:`.params`; the loop in :mod:`.trainer`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from slimline.core.errors import SlimlineError, StepFailed
from slimline.core.handle import ModelHandle
from slimline.core.plugin import Plugin, PluginParams, Problem, StepContext, StepOutput
from slimline.plugins.distill.params import TEACHER_INPUT, TEACHER_SOURCE, DistillParams
from slimline.plugins.distill.teacher import Teacher, open_model_file, resolve_teacher
from slimline.plugins.distill.torchio import as_model_array, call_module, input_order

if TYPE_CHECKING:  # pragma: no cover
    import torch

NO_DATA = "distillation needs training data (a labelled or unlabelled dataset): add --data"
_COMPILED = ("torchscript", "torch_export")


class Distill(Plugin):
    id: ClassVar[str] = "builtin.distill"
    version: ClassVar[str] = "1"
    title: ClassVar[str] = "Distill from teacher"
    category = "distill"
    description: ClassVar[str] = (
        "Knowledge distillation: trains the current model (the student, e.g. after pruning or "
        "low-rank) to match a teacher's softened outputs, L = α·CE(student, labels) + "
        "(1−α)·T²·KL(softmax(t/T) ‖ softmax(s/T)); pure soft-target KD when the data has no labels. "
        "The teacher defaults to the pipeline's input model and may be ONNX. Early stopping on a "
        "validation split keeps the best weights. A causal language model with a text file as training data "
        "is distilled token by token (KL on softened next-token distributions) with validation perplexity "
        "on held-out windows of that text.")
    input_formats = ("torch",)
    output_format = "torch"
    Params: ClassVar[type[PluginParams]] = DistillParams
    needs_data: ClassVar[tuple[str, ...]] = ("train",)

    # -- pre-flight --------------------------------------------------------
    def check(self, model: ModelHandle, params: PluginParams) -> list[Problem]:
        p = _params(params)
        problems = self.check_format(model)
        if problems:
            return problems
        if p.student:
            problems += _check_student_file(Path(p.student).expanduser())
        elif model.format in _COMPILED:
            problems.append(Problem(
                f"a {model.format} model cannot be trained here (its code is compiled, not editable)",
                field="student",
                fix="open the eager model (Slimline archive, Hugging Face folder or trusted checkpoint), "
                    "or give a Slimline torch archive in 'student'"))
        if p.teacher not in (TEACHER_SOURCE, TEACHER_INPUT) and not Path(p.teacher).expanduser().exists():
            problems.append(Problem(f"teacher file {p.teacher} does not exist", field="teacher",
                                    fix="give an existing model file, or 'source' for the pipeline's input model"))
        if p.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                problems.append(Problem("CUDA is not available on this machine", field="device",
                                        fix="use device 'auto' (falls back to CPU) or 'cpu'"))
        return problems

    # -- run ------------------------------------------------------------------
    def run(self, model: ModelHandle, params: PluginParams, ctx: StepContext) -> StepOutput:
        import torch

        from slimline.plugins.distill import trainer

        p = _params(params)
        problems = [pr for pr in self.check(model, p) if pr.severity == "error"]
        if problems:
            pr = problems[0]
            raise StepFailed(pr.message, subject=pr.field or self.id, hint=pr.fix)
        from slimline.plugins.distill import lm as lm_distill

        if lm_distill.applies(model, ctx):  # causal LM + text file: token-level KD (plugins/distill/lm.py)
            return lm_distill.run(model, p, ctx, _pick_device(p.device))
        dataset, warnings = _training_set(ctx)
        device = _pick_device(p.device)
        notes: list[str] = []
        old_threads = torch.get_num_threads()
        if ctx.threads:
            torch.set_num_threads(int(ctx.threads))
        try:
            with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device == "cuda" else []):
                torch.manual_seed(p.seed)
                return self._run(model, p, ctx, dataset, device, notes, warnings, trainer)
        finally:
            torch.set_num_threads(old_threads)

    def _run(self, model: ModelHandle, p: DistillParams, ctx: StepContext, dataset: Any, device: str,
             notes: list[str], warnings: list[str], trainer: Any) -> StepOutput:
        student_handle, student = load_student(model, p, device)
        teacher_handle = resolve_teacher(p.teacher, model, ctx.source_model)
        if not p.student and Path(teacher_handle.path) == Path(model.path):
            warnings.append("the teacher and the student are the same model (self-distillation)")
        ctx.progress(0.0, "loading the teacher")
        teacher = Teacher(teacher_handle, device, ctx.threads)

        inputs_raw: dict[str, np.ndarray] = dict(dataset.inputs)
        n = len(next(iter(inputs_raw.values())))
        labels = _labels(dataset, n)
        order = input_order(inputs_raw, [s.name for s in student_handle.inputs])
        inputs = {k: as_model_array(inputs_raw[k]) for k in order}

        t0 = time.perf_counter()
        teach = teacher.logits(inputs, batch_size=max(p.batch_size, 64), cancel=ctx.cancel,
                               progress=lambda f: ctx.progress(0.1 * f, "teacher outputs"))
        teacher_seconds = time.perf_counter() - t0
        n_classes = _check_shapes(student, inputs, teach, labels, device)

        train_idx, val_idx = _split(n, p.validation_fraction, p.seed)
        if p.engine == "torchrun":
            from slimline.plugins.distill.launch import train_distributed

            arrays = {"inputs": inputs, "labels": labels, "teacher": teach, "train_idx": train_idx,
                      "val_idx": val_idx}
            result = train_distributed(student, model, p, ctx, device, arrays, progress_start=0.1)
            data = None
        else:
            data = trainer.to_tensors(inputs, labels, teach, train_idx, val_idx, device)
            result = trainer.train(student, data, p, ctx, device, progress_start=0.1)

        ctx.cancel.raise_if_cancelled()
        out = _save(student, student_handle, ctx, teacher_handle, p)
        ctx.progress(1.0, "done")

        metrics, more_notes = _report(result, data, teach, labels, p, val_idx, n_classes)
        epoch_seconds = [float(r["seconds"]) for r in result.history if "seconds" in r]
        metrics.update(seconds_per_epoch=sum(epoch_seconds) / max(len(epoch_seconds), 1),
                       processes=float(p.nproc * p.nnodes if p.engine == "torchrun" else 1))
        metrics.update(seconds_teacher_outputs=teacher_seconds, device_cuda=float(device == "cuda"),
                       train_rows=float(len(train_idx)), val_rows=float(len(val_idx)),
                       student_params=float(sum(t.numel() for t in student.parameters())))
        name = getattr(dataset, "name", "training data")
        notes.append(f"trained on {name}: n={len(train_idx)} rows for training, n={len(val_idx)} held out "
                     f"for validation (seed {p.seed}); teacher outputs computed once for all {n} rows "
                     f"({teacher.kind}, {teacher_seconds:.1f} s)")
        notes.append(f"teacher: {teacher_handle.name} ({teacher_handle.format}); student: {student_handle.name}"
                     + (" (user-supplied file)" if p.student else " (this step's input model)"))
        notes.append(f"device: {device}" + ("" if device == "cuda" or p.device == "cpu" else " (CUDA not available)")
                     + f"; {result.steps} optimizer steps, {result.seconds_per_step * 1000:.1f} ms per step, "
                     f"{metrics['seconds_per_epoch']:.2f} s per epoch")
        if p.engine == "torchrun":
            notes.append(f"data-parallel with torchrun: {p.nproc} process(es) × {p.nnodes} machine(s), gradients "
                         f"averaged (DDP, {'nccl' if device == 'cuda' else 'gloo'}); each global batch of "
                         f"{p.batch_size} rows split across them; BatchNorm statistics per process; rank 0 wrote "
                         "the result")
        notes.extend(more_notes)
        if labels is None:
            notes.append("the data has no labels: pure soft-target distillation (T²·KL only), alpha is ignored")
        if result.before is not None and result.best_epoch == 0:
            warnings.append("no epoch improved the validation score: the output keeps the student's initial "
                            "weights; try a lower learning_rate or more epochs")
        table = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()} for row in result.history]
        return StepOutput(model=out, metrics=metrics, notes=notes, warnings=warnings, tables={"epochs": table})


# -- helpers ------------------------------------------------------------------
def _params(params: PluginParams) -> DistillParams:
    if isinstance(params, DistillParams):
        return params
    return DistillParams.model_validate(params.model_dump() if isinstance(params, PluginParams) else params)


def _check_student_file(path: Path) -> list[Problem]:
    from slimline.core.torchmodel import read_archive_meta

    fix = "give a Slimline torch archive (.safetensors written by Slimline) or leave 'student' empty"
    if not path.is_file():
        return [Problem(f"student file {path} does not exist", field="student", fix=fix)]
    try:
        ok = read_archive_meta(path) is not None
    except Exception:  # not a safetensors file at all
        ok = False
    return [] if ok else [Problem(f"{path.name} is not a Slimline torch archive", field="student", fix=fix)]


def _training_set(ctx: StepContext) -> tuple[Any, list[str]]:
    """The training split, or a clear failure.

    Never falls back to the evaluation data: the pipeline scores every step on
    it, and a student trained on those rows would report inflated accuracy.
    """
    data = ctx.data
    train = getattr(data, "train", None) if data is not None else None
    if train is None or len(train) == 0:
        has_eval = data is not None and getattr(data, "eval", None) is not None
        raise StepFailed(NO_DATA, subject="distill",
                         hint=("the evaluation data is not used for training; give a training set with "
                               "--train-data PATH" if has_eval else
                               "give a dataset with --data PATH (a share is held out for evaluation) "
                               "or --train-data PATH; labels are optional"))
    warnings: list[str] = []
    if getattr(train, "kind", "real") == "random":
        warnings.append("the training data is random: the student only learns the teacher's outputs on noise")
    return train, warnings


def _pick_device(choice: str) -> str:
    import torch

    if choice == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if choice == "cuda":
        raise StepFailed("CUDA is not available on this machine", subject="device",
                         hint="use device 'auto' (falls back to CPU) or 'cpu'")
    return "cpu"


def load_student(model: ModelHandle, p: DistillParams, device: str) -> tuple[ModelHandle, "torch.nn.Module"]:
    if p.student:
        handle = open_model_file(Path(p.student).expanduser(), "student")
    else:
        handle = model
    try:
        if handle.format == "slimline_torch":
            from slimline.core.torchmodel import load_torch_module

            module = load_torch_module(handle)
        else:
            from slimline.core.models import load_eager_module

            module = load_eager_module(handle)
    except SlimlineError as exc:
        raise StepFailed(f"cannot load the student: {exc.message}", subject="student",
                         hint=exc.hint or "give a Slimline torch archive in 'student'") from exc
    for t in module.parameters():
        t.requires_grad_(t.is_floating_point())
    return handle, module.to(device)


def _labels(dataset: Any, n: int) -> np.ndarray | None:
    labels = getattr(dataset, "labels", None)
    if labels is None:
        return None
    labels = np.asarray(labels)
    if len(labels) != n:
        raise StepFailed(f"the data has {n} input rows but {len(labels)} labels", subject="data",
                         hint="give one label per row (or none for pure distillation)")
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
            return labels.astype(np.int64)
        raise StepFailed(f"labels must be class indices (integers), got {labels.dtype}", subject="data",
                         hint="store class indices as labels, or drop the labels for pure distillation")
    return labels.astype(np.int64)


def _check_shapes(student: "torch.nn.Module", inputs: dict[str, np.ndarray], teach: np.ndarray,
                  labels: np.ndarray | None, device: str) -> int:
    """Fail before training when student and teacher outputs or labels do not fit together."""
    import torch

    student.eval()
    with torch.no_grad():
        feeds = {k: torch.from_numpy(np.ascontiguousarray(v[:2])).to(device) for k, v in inputs.items()}
        out = call_module(student, feeds)
    if tuple(out.shape[1:]) != tuple(teach.shape[1:]):
        raise StepFailed(f"student outputs {list(out.shape[1:])} per row but the teacher gives {list(teach.shape[1:])}",
                         subject="teacher", hint="use a teacher and a student with the same outputs (same classes)")
    c = int(teach.shape[-1])
    if labels is not None and tuple(labels.shape[1:]) != tuple(teach.shape[1:-1]):
        raise StepFailed(f"labels have shape {list(labels.shape[1:])} per row, expected {list(teach.shape[1:-1])} "
                         f"(one class index per output position)", subject="data",
                         hint="store class indices, not one-hot vectors, as labels")
    if labels is not None:
        valid = labels[labels != -100]
        if valid.size and (valid.min() < 0 or valid.max() >= c):
            raise StepFailed(f"labels range {int(valid.min())}..{int(valid.max())} but the model has {c} classes",
                             subject="data", hint="check that the labels belong to this model's classes")
    return c


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n < 2:
        raise StepFailed(f"the training data has {n} row(s)", subject="data", hint="give at least 2 rows")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * fraction))
    if fraction > 0:
        n_val = min(max(n_val, 1), n - 2)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _save(student: "torch.nn.Module", handle: ModelHandle, ctx: StepContext, teacher: ModelHandle,
          p: DistillParams) -> ModelHandle:
    from slimline.core.torchmodel import read_archive_meta, save_torch_module

    base = replacements = None
    extra: dict[str, Any] = {}
    if handle.format == "slimline_torch":
        meta = read_archive_meta(handle.path) or {}
        arch = meta.get("arch", {})
        extra = dict(meta.get("extra", {}))
        if arch.get("base", {}).get("kind") != "spec":
            base, replacements = arch.get("base"), arch.get("replacements")
    elif handle.format == "hf":
        from slimline.core.models.hf import hf_base

        base = hf_base(handle, student)
    extra["distilled_from"] = teacher.name
    try:
        return save_torch_module(student.cpu(), ctx.output_path("model.safetensors"), inputs=handle.inputs,
                                 outputs=handle.outputs, base=base, replacements=replacements, extra_meta=extra)
    except SlimlineError as exc:
        raise StepFailed(f"cannot save the trained student: {exc.message}", subject="student",
                         hint=exc.hint) from exc


def _report(result: Any, data: Any, teach: np.ndarray, labels: np.ndarray | None, p: DistillParams,
            val_idx: np.ndarray, n_classes: int) -> tuple[dict[str, float], list[str]]:
    metrics: dict[str, float] = {
        "epochs_run": float(result.epochs_run), "best_epoch": float(result.best_epoch),
        "steps": float(result.steps), "seconds_per_step": result.seconds_per_step,
    }
    notes: list[str] = []
    if result.before is None:
        notes.append("validation_fraction is 0: no validation, no early stopping, the last epoch's weights are kept")
        return metrics, notes
    kind = "accuracy" if labels is not None else "agreement"
    metrics[f"student_val_{kind}_before"] = result.before.accuracy
    metrics[f"student_val_{kind}"] = result.after.accuracy
    metrics["val_loss_before"] = result.before.loss
    metrics["val_loss"] = result.after.loss
    if labels is not None:
        vl = labels[val_idx].reshape(-1)
        pred = teach[val_idx].reshape(-1, n_classes).argmax(-1)
        keep = vl != -100
        metrics["teacher_val_accuracy"] = float((pred[keep] == vl[keep]).mean()) if keep.any() else float("nan")
        notes.append(f"validation top-1 on the held-out split (n={result.after.n}): teacher "
                     f"{metrics['teacher_val_accuracy']:.4f}, student {result.before.accuracy:.4f} → "
                     f"{result.after.accuracy:.4f} (best epoch {result.best_epoch} of {result.epochs_run})")
    else:
        notes.append(f"validation = top-1 agreement with the teacher on the held-out split (n={result.after.n}): "
                     f"{result.before.accuracy:.4f} → {result.after.accuracy:.4f} "
                     f"(best epoch {result.best_epoch} of {result.epochs_run})")
    if result.stopped_early:
        notes.append(f"early stopping: no better validation score for {p.patience} epochs; "
                     f"kept the weights of epoch {result.best_epoch}")
    return metrics, notes
