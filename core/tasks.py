"""What a model's output *is*, and so what "still the same model" means (DESIGN.md §11).

One metric does not fit every model: top-1 over hidden units means nothing for a
sentence embedder, and cosine of a near-empty probability map is noise. Each model
gets a task, guessed from its outputs, its Hugging Face config and the data (with
the reason shown) or set in the pipeline's ``evaluation.task``; the task picks the
fidelity metrics and the budget that judges a step. The math is in
:mod:`slimline.core.fidelity`; the evaluation after each step and the quantize
guardrail both come here, so they judge a model the same way.
"""
from __future__ import annotations

from typing import Any, get_args

import numpy as np
from pydantic import BaseModel, Field

from slimline.core import fidelity as fm
from slimline.core.pipeline import Budgets, TaskName

Task = TaskName
TASKS: tuple[str, ...] = get_args(TaskName)
TASK_TITLES = {"classification": "class scores", "embedding": "embedding", "dense_map": "dense map",
               "token_logits": "token logits (language model)", "generic": "generic outputs"}
_EMBED_NAMES = ("last_hidden_state", "pooler_output", "sentence_embedding", "embedding", "embeddings",
                "hidden_states", "token_embeddings", "pooled")
_CAUSAL_ARCH = ("ForCausalLM", "LMHeadModel")
_CLASS_ARCH = ("ForSequenceClassification", "ForImageClassification", "ForAudioClassification",
               "ForMultipleChoice")
_DENSE_ARCH = ("ForSemanticSegmentation", "ForObjectDetection", "ForDepthEstimation", "ForInstanceSegmentation")


class TaskGuess(BaseModel):
    """The task and, in words, why it was chosen."""

    task: Task
    reason: str


class TaskFidelity(BaseModel):
    """Fidelity of one model vs the original, in the task's own terms."""

    task: Task
    metric: str                       # the headline metric's name, e.g. "pooled cosine"
    value: float                      # its value
    higher_is_better: bool = True
    worst: float | None = None        # the worst row (min cosine, max per-row rel. L2), where it means something
    n: int = 0
    dataset: str = ""
    extra: dict[str, float] = Field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{self.metric} {_fmt(self.value)}"]
        if self.worst is not None:
            parts.append(f"worst row {_fmt(self.worst)}")
        parts += [f"{k} {int(v)}" if k in _COUNTS and np.isfinite(v) else f"{k} {_fmt(v)}"
                  for k, v in self.extra.items()]
        note = no_positives_note(self.extra)
        return ", ".join(parts) + (f" ({note})" if note else "")


# Dense-map extras that are counts of cells, shown as integers.
_COUNTS = ("positives in original", "positives")
# The headline metric of a detection head (its sub-kind): relative L2 of the class-score rows only.
DETECTION_METRIC = "score relative L2"


def no_positives_note(extra: dict[str, float]) -> str:
    """Said when a dense map's original has no cell above the threshold, so IoU cannot judge it."""
    if extra.get("positives in original") == 0 and "threshold" in extra:
        return f"no positives in the reference at t={extra['threshold']:g}: judged by relative L2 only"
    return ""


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return str(v)
    return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3g}"


# --------------------------------------------------------------------------- guessing


def _is_int_input(arr: Any) -> bool:
    return np.asarray(arr).dtype.kind in "iub"


def _token_inputs(handle: Any, dataset: Any) -> bool:
    names = [s.name.lower() for s in getattr(handle, "inputs", []) or []]
    if any("input_ids" in n or "token" in n for n in names):
        return True
    inputs = getattr(dataset, "inputs", None) or {}
    return bool(inputs) and "input_ids" in inputs


def infer_task(handle: Any, outputs_sample: Any = None, dataset: Any = None) -> TaskGuess:
    """Guess the task from the handle's config/meta, the first output and the data, with the reason.

    Conservative: anything not clearly one of the four known kinds is "generic" (judged by
    relative L2 and cosine, and said so).
    """
    meta = dict(getattr(handle, "meta", {}) or {})
    arch = str((meta.get("architectures") or [""])[0] or "")
    if arch.endswith(_CAUSAL_ARCH):
        return TaskGuess(task="token_logits", reason=f"causal language model (config architectures {arch})")
    if arch.endswith(_CLASS_ARCH):
        return TaskGuess(task="classification", reason=f"classifier (config architectures {arch})")
    out = _first(outputs_sample)
    if arch.endswith(_DENSE_ARCH):
        if out is not None and fm.detection_axis(out) is not None:
            return TaskGuess(task="dense_map", reason=f"detection head (config architectures {arch}); "
                                                      f"{_detection_words(out)}")
        return TaskGuess(task="dense_map", reason=f"dense prediction head (config architectures {arch})")
    declared = meta.get("task")
    if declared == "detection":
        words = _detection_words(out) if out is not None and fm.detection_axis(out) is not None else (
            "judged as a dense map (the output is not laid out as [N, 4+C, A] scores in [0, 1])")
        return TaskGuess(task="dense_map", reason=f"the model file declares task 'detection': {words}")
    if isinstance(declared, str) and declared in TASKS:
        return TaskGuess(task=declared, reason=f"the model file declares task '{declared}'")
    out_names = [s.name.lower() for s in getattr(handle, "outputs", []) or []]
    name = out_names[0] if out_names else ""
    labelled = getattr(dataset, "labels", None) is not None and getattr(dataset, "kind", "real") == "real"
    tokens = _token_inputs(handle, dataset)
    if arch and arch.endswith("Model") and tokens:
        return TaskGuess(task="embedding", reason=f"encoder without a task head (config architectures {arch}): "
                                                  "its hidden states are an embedding")
    if out is None:
        return TaskGuess(task="generic", reason="no output to look at")
    shape = list(out.shape)
    if out.dtype.kind not in "fc":
        return TaskGuess(task="generic", reason=f"integer output {shape}")
    if any(k in name for k in _EMBED_NAMES):
        return TaskGuess(task="embedding", reason=f"output '{name}' {shape} holds hidden states / a pooled vector")
    if out.ndim == 3 and tokens:
        vocab = meta.get("vocab_size")
        if "logit" in name or (vocab and shape[-1] == vocab):
            return TaskGuess(task="token_logits", reason=f"per-token logits {shape} over token inputs")
        return TaskGuess(task="embedding", reason=f"per-token hidden states {shape} over token inputs")
    if not tokens and fm.detection_axis(out) is not None:
        return TaskGuess(task="dense_map", reason=f"detection head {shape}: {_detection_words(out)}")
    if out.ndim == 4 and min(shape[2:]) >= 2:
        return TaskGuess(task="dense_map", reason=f"N×C×H×W map output {shape}")
    if out.ndim == 3 and not tokens and min(shape[1:]) >= 2:
        return TaskGuess(task="dense_map", reason=f"N×H×W map output {shape}")
    if out.ndim == 2 and shape[1] >= 2:
        if labelled:
            return TaskGuess(task="classification", reason=f"2-D scores {shape}, labelled data")
        if tokens and "logit" not in name:
            return TaskGuess(task="embedding", reason=f"pooled vector {shape} from a text model")
        if any(k in name for k in ("logit", "prob", "score", "class")):
            return TaskGuess(task="classification", reason=f"2-D output '{name}' {shape}: class scores")
        return TaskGuess(task="classification", reason=f"2-D output {shape}: last dim read as classes "
                                                       "(no labels: judged by agreement with the original)")
    return TaskGuess(task="generic", reason=f"output {shape} is none of the known kinds")


def _detection_words(out: np.ndarray) -> str:
    axis = fm.detection_axis(out)
    f, a = out.shape[axis or 1], out.shape[3 - (axis or 1)]
    return (f"{fm.BOX_ROWS} box rows + {f - fm.BOX_ROWS} class-score rows in [0, 1] over {a} anchors "
            "(sub-kind detection: judged on the score rows by relative L2 and positives IoU at the threshold)")


def resolve_task(override: str | None, handle: Any, outputs_sample: Any = None, dataset: Any = None) -> TaskGuess:
    """The pipeline's ``evaluation.task`` when set, else the guess."""
    if override:
        return TaskGuess(task=override, reason="set in the pipeline (evaluation.task)")
    return infer_task(handle, outputs_sample, dataset)


# --------------------------------------------------------------------------- metrics


def _first(x: Any) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        return np.asarray(x[0]) if len(x) else None
    return np.asarray(x)


def _mask(dataset: Any, n: int) -> np.ndarray | None:
    inputs = getattr(dataset, "inputs", None) or {}
    for key in ("attention_mask", "mask"):
        if key in inputs:
            m = np.asarray(inputs[key])[:n]
            return m if m.ndim == 2 else None
    return None


def _ids(dataset: Any, n: int) -> np.ndarray | None:
    inputs = getattr(dataset, "inputs", None) or {}
    return np.asarray(inputs["input_ids"])[:n] if "input_ids" in inputs else None


def _positives(ref: np.ndarray, got: np.ndarray, threshold: float) -> dict[str, float]:
    iou, n_ref, n_got = fm.positives_iou(ref, got, threshold)
    extra = {"threshold": float(threshold), "positives in original": float(n_ref), "positives": float(n_got)}
    if iou is not None:
        extra["positives IoU"] = iou
    return extra


def _dense_map(ref: np.ndarray, got: np.ndarray, n: int, name: str, threshold: float) -> TaskFidelity:
    """Relative L2 (1 % full-scale floor), PSNR, agreement and positives IoU; a detection head
    (sub-kind detection) is judged on its class-score rows, its box rows shown beside."""
    axis = fm.detection_axis(ref)
    if axis is None:
        rows = fm.row_rel_l2(ref, got)
        return TaskFidelity(task="dense_map", metric="relative L2", value=fm.rel_l2_error(ref, got),
                            higher_is_better=False, worst=float(rows.max()) if rows.size else None, n=n,
                            dataset=name, extra={"PSNR dB": fm.psnr(ref, got),
                                                 "map agreement": fm.map_agreement(ref, got),
                                                 "max |Δ|": fm.max_abs_error(ref, got),
                                                 **_positives(ref, got, threshold)})
    box_ref, score_ref = fm.split_detection(ref, axis)
    box_got, score_got = fm.split_detection(got, axis)
    rows = fm.row_rel_l2(score_ref, score_got)
    return TaskFidelity(task="dense_map", metric=DETECTION_METRIC, value=fm.rel_l2_error(score_ref, score_got),
                        higher_is_better=False, worst=float(rows.max()) if rows.size else None, n=n, dataset=name,
                        extra={"box relative L2": fm.rel_l2_error(box_ref, box_got),
                               "score PSNR dB": fm.psnr(score_ref, score_got),
                               "max |Δ|": fm.max_abs_error(ref, got),
                               **_positives(score_ref, score_got, threshold)})


def fidelity_for(task: str, reference_outputs: Any, outputs: Any, dataset: Any = None,
                 threshold: float | None = None) -> TaskFidelity:
    """The task's fidelity of ``outputs`` vs ``reference_outputs`` (first output, same rows, same order).

    ``threshold``: a dense map's positive-cell threshold (default: ``Budgets().dense_map_threshold``).
    """
    ref, got = _first(reference_outputs), _first(outputs)
    if ref is None or got is None:
        raise ValueError("no outputs to compare")
    ref, got = np.asarray(ref), np.asarray(got)
    n = int(ref.shape[0]) if ref.ndim else 1
    name = str(getattr(dataset, "name", "") or "")
    if ref.shape != got.shape:
        return TaskFidelity(task=task, metric="shape mismatch", value=float("nan"), n=n, dataset=name,
                            extra={})
    if task == "classification":
        cos = fm.row_cosines(ref, got)
        extra = {"mean cosine": float(cos.mean()), "min cosine": float(cos.min())}
        if ref.ndim >= 2 and ref.shape[-1] >= 2:
            extra["KL"] = fm.kl_divergence(ref, got)
        return TaskFidelity(task="classification", metric="top-1 agreement", value=fm.top1_agreement(ref, got),
                            n=n, dataset=name, extra=extra)
    if task == "embedding":
        mask = _mask(dataset, n)
        pa, pb = fm.masked_mean_pool(ref, mask), fm.masked_mean_pool(got, mask)
        cos = fm.row_cosines(pa, pb)
        extra = {"nearest-neighbour agreement": fm.nn_agreement(pa, pb)}
        if mask is not None and ref.ndim == 3:
            extra["pooling"] = 1.0  # mean over the attention mask (1 = mask used)
        return TaskFidelity(task="embedding", metric="pooled cosine", value=float(cos.mean()),
                            worst=float(cos.min()), n=n, dataset=name, extra=extra)
    if task == "dense_map":
        return _dense_map(ref, got, n, name, Budgets().dense_map_threshold if threshold is None else threshold)
    if task == "token_logits":
        mask = _mask(dataset, n)
        m = mask if (mask is not None and ref.ndim == 3 and mask.shape == ref.shape[:2]) else None
        extra = {"KL": fm.kl_divergence(ref, got, m)}
        ids = _ids(dataset, n)
        if ids is not None and ref.ndim == 3 and ids.shape == ref.shape[:2] and ref.shape[1] >= 2:
            p0, p1 = fm.perplexity(ref, ids, m), fm.perplexity(got, ids, m)
            if np.isfinite(p0) and p0 > 0:  # no next tokens (one-token rows): no perplexity
                extra["perplexity"] = p1
                extra["perplexity original"] = p0
                extra["perplexity increase"] = p1 / p0 - 1.0
        return TaskFidelity(task="token_logits", metric="next-token agreement",
                            value=fm.next_token_agreement(ref, got, m), n=n, dataset=name, extra=extra)
    cos = fm.row_cosines(ref, got)
    return TaskFidelity(task="generic", metric="relative L2", value=fm.rel_l2_error(ref, got, floor=0.0),
                        higher_is_better=False, n=n, dataset=name,
                        extra={"mean cosine": float(cos.mean()), "min cosine": float(cos.min())})


def budget_check(task: str, fid: TaskFidelity, budgets: Budgets | None = None) -> tuple[bool, str]:
    """(ok, reason): the task's budget applied to its fidelity; the reason names figure and budget."""
    b = budgets or Budgets()
    v = fid.value
    if not np.isfinite(v) and fid.metric == "shape mismatch":
        return False, "the output shape differs from the original's"
    fails: list[str] = []

    def low(name: str, value: float, floor: float) -> None:
        if not (np.isfinite(value) and value >= floor):
            fails.append(f"{name} {_fmt(value)} < budget {floor}")

    def high(name: str, value: float, ceiling: float) -> None:
        if not (np.isfinite(value) and value <= ceiling):
            fails.append(f"{name} {_fmt(value)} > budget {ceiling}")

    if task == "classification":
        low("mean output cosine", fid.extra.get("mean cosine", v), b.min_cosine)
    elif task == "embedding":
        low("pooled cosine", v, b.embedding_min_cosine)
        if b.embedding_min_nn_agreement > 0:
            low("nearest-neighbour agreement", fid.extra.get("nearest-neighbour agreement", 1.0),
                b.embedding_min_nn_agreement)
    elif task == "dense_map":
        if fid.metric == DETECTION_METRIC:
            high(DETECTION_METRIC, v, b.detection_max_score_rel_l2)
        else:
            high("relative L2", v, b.dense_map_max_rel_l2)
        iou = fid.extra.get("positives IoU")
        if iou is not None and b.dense_map_min_positives_iou > 0 and not (
                np.isfinite(iou) and iou >= b.dense_map_min_positives_iou):
            t = fid.extra.get("threshold", b.dense_map_threshold)
            what = "anchor × class cells" if fid.metric == DETECTION_METRIC else "cells"
            fails.append(f"positives IoU at score > {t:g} {_fmt(iou)} < budget {b.dense_map_min_positives_iou} "
                         f"({int(fid.extra.get('positives in original', 0))} {what} above {t:g} in the original, "
                         f"{int(fid.extra.get('positives', 0))} in this model)")
        if b.dense_map_min_agreement > 0:
            low("map agreement", fid.extra.get("map agreement", 1.0), b.dense_map_min_agreement)
        note = no_positives_note(fid.extra)
        if fails and note:
            fails.append(note)
    elif task == "token_logits":
        low("next-token agreement", v, b.token_min_agreement)
        high("KL", fid.extra.get("KL", 0.0), b.token_max_kl)
        if "perplexity increase" in fid.extra:
            high("perplexity increase", fid.extra["perplexity increase"], b.token_max_perplexity_increase)
    else:
        high("relative L2", v, b.generic_max_rel_l2)
    if fails:
        title = TASK_TITLES.get(task, task) + (" (detection head)" if fid.metric == DETECTION_METRIC else "")
        return False, f"{title}: " + "; ".join(fails)  # the callers add the data set and n
    return True, ""


__all__ = ["DETECTION_METRIC", "TASKS", "TASK_TITLES", "Task", "TaskFidelity", "TaskGuess", "budget_check",
           "fidelity_for", "infer_task", "no_positives_note", "resolve_task"]
