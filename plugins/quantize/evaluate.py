"""Verification for the quantize guardrail: feeds from the user's data, fidelity, latency, per-node error.

The step checks its own result before it passes a model on. Sessions come from the
engine's one owner (``slimline.core.runtime.ort_inference_session``) and the metric math
from ``slimline.core.fidelity``, so the guardrail's numbers are the ones the evaluation
shows; what is specific to quantizing (which output holds class scores, the budget
test, ranking nodes by the error they add) stays here.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimline.core.errors import StepFailed
from slimline.core.fidelity import channel_rel_error, max_abs_error, row_cosines, top1_accuracy, top1_agreement
from slimline.core.runtime import ort_inference_session, ort_numpy_dtype, resolve_threads

# An onnxruntime.InferenceSession made by core.runtime (typed loosely: onnxruntime is imported lazily).
OrtSession = Any

def make_session(model: str | Path | bytes, threads: int | None = None, *, optimize: bool = True,
                 external_data_dir: Path | None = None) -> OrtSession:
    """A CPU session configured by the engine (threads: 0/None = all cores)."""
    return ort_inference_session(model, threads=threads, optimize=optimize, external_data_dir=external_data_dir)


@dataclass
class EvalSet:
    """Rows to compare models on. ``kind`` is 'real' or 'random' (random: smoke/latency only)."""

    name: str
    kind: str
    feeds: dict[str, np.ndarray]
    labels: np.ndarray | None
    batch: int | None  # fixed batch size of the model, None when dynamic
    axes: dict[str, int | None] = field(default_factory=dict)  # batch axis per input (None: a scalar, fed whole)

    def __len__(self) -> int:
        return n_rows(self.feeds, self.axes)

    def batches(self, size: int = 32) -> Iterable[dict[str, np.ndarray]]:
        size = self.batch or size
        n = len(self)
        for i in range(0, n - (n % size if self.batch else 0), size):
            yield take_rows(self.feeds, self.axes, slice(i, i + size))

    def first(self) -> dict[str, np.ndarray]:
        size = self.batch or 1
        return take_rows(self.feeds, self.axes, slice(0, size))

    def head(self, keep: int) -> "EvalSet":
        """The first ``keep`` rows, without labels."""
        return EvalSet(self.name, self.kind, take_rows(self.feeds, self.axes, slice(0, keep)), None, self.batch,
                       self.axes)

    def describe(self) -> str:
        if self.kind == "random":
            return f"random inputs (n={len(self)}, fidelity only, not accuracy)"
        return f"{self.name} (n={len(self)})"


def _axis(feeds: dict[str, np.ndarray], axes: dict[str, int | None], k: str) -> int | None:
    return axes.get(k, 0) if feeds[k].ndim else None


def n_rows(feeds: dict[str, np.ndarray], axes: dict[str, int | None]) -> int:
    """Rows in ``feeds``: the length of the first input along its batch axis (scalars have none)."""
    for k, v in feeds.items():
        ax = _axis(feeds, axes, k)
        if ax is not None:
            return int(v.shape[ax])
    return 0


def take_rows(feeds: dict[str, np.ndarray], axes: dict[str, int | None], sl: slice) -> dict[str, np.ndarray]:
    """Rows ``sl`` of every input along its batch axis; a scalar input (a sample rate) is fed whole."""
    out: dict[str, np.ndarray] = {}
    for k, v in feeds.items():
        ax = _axis(feeds, axes, k)
        out[k] = v if ax is None else v[(slice(None),) * ax + (sl,)]
    return out


def feed_axes(sess: OrtSession) -> dict[str, int | None]:
    """Batch axis of each model input (slimline.core.data.batch_axis on the session's shapes)."""
    from slimline.core.data import batch_axis

    return {i.name: batch_axis([d if isinstance(d, (int, str)) else "?" for d in i.shape]) for i in sess.get_inputs()}


def _input_meta(sess: OrtSession) -> list[tuple[str, list[Any], Any]]:
    return [(i.name, list(i.shape), ort_numpy_dtype(i.type)) for i in sess.get_inputs()]


def fixed_batch(sess: OrtSession) -> int | None:
    axes = feed_axes(sess)
    dims = [i.shape[axes[i.name]] for i in sess.get_inputs() if axes[i.name] is not None]
    fixed = [d for d in dims if isinstance(d, int) and d > 0]
    return fixed[0] if fixed and len(fixed) == len(dims) else None


def dataset_feeds(dataset: Any, sess: OrtSession, limit: int,
                  role: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Map a Dataset's arrays onto the model's inputs, cast to the model's dtypes, at most ``limit`` rows."""
    arrays: dict[str, np.ndarray] = dict(getattr(dataset, "inputs", {}) or {})
    meta = _input_meta(sess)
    if len(meta) == 1 and len(arrays) == 1 and meta[0][0] not in arrays:
        arrays = {meta[0][0]: next(iter(arrays.values()))}
    feeds: dict[str, np.ndarray] = {}
    axes = feed_axes(sess)
    filled = kv_filled(sess) if "input_ids" in arrays else set()
    for name, shape, dtype in meta:
        if name in filled:  # a KV-cache decoder's past: empty (one full pass), see with_empty_past
            continue
        if name not in arrays:
            raise StepFailed(
                f"the {role} dataset has no array for model input '{name}' (it has {sorted(arrays)})",
                subject=f"data.{role}", hint="name the dataset arrays after the model inputs")
        arr = take_rows({name: np.asarray(arrays[name])}, axes, slice(0, limit))[name]
        if len(shape) and arr.ndim != len(shape):
            raise StepFailed(
                f"input '{name}' expects rank {len(shape)} {shape}, the {role} dataset gives shape {list(arr.shape)}",
                subject=f"data.{role}", hint="reshape the dataset to the model's input shape")
        feeds[name] = np.ascontiguousarray(arr.astype(dtype, copy=False))
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        labels = np.asarray(labels)[:limit]
    return with_empty_past(sess, feeds), labels


def kv_filled(sess: OrtSession) -> set[str]:
    """Inputs of a KV-cache decoder that a full-sequence pass feeds itself (past_*, position_ids)."""
    from slimline.core.lm.genai import FILLED_INPUTS, PAST_PREFIXES

    names = [i.name for i in sess.get_inputs()]
    if "input_ids" not in names or not any(n.startswith(PAST_PREFIXES) for n in names):
        return set()
    return {n for n in names if n.startswith(PAST_PREFIXES) or n in FILLED_INPUTS}


def with_empty_past(sess: OrtSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A KV-cache decoder's feeds for one full pass: empty past, mask over the ids (core.lm.genai)."""
    if not kv_filled(sess):
        return feeds
    from slimline.core.lm.genai import full_sequence_feeds

    given = {"input_ids": feeds["input_ids"]}
    mask = feeds.get("attention_mask")
    if mask is not None and mask.shape == feeds["input_ids"].shape:
        given["attention_mask"] = mask
    return full_sequence_feeds(given, sess.get_inputs(), None)


def random_feeds(sess: OrtSession, dims: dict[str, int], n: int, seed: int) -> dict[str, np.ndarray]:
    """Random rows for smoke/latency when no data was given (labelled 'random' everywhere)."""
    from slimline.core.data import AUDIO_DIMS, AUDIO_SAMPLES, scalar_value
    from slimline.core.handle import TensorSpec

    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    axes = feed_axes(sess)
    for name, shape, dtype in _input_meta(sess):
        ax = axes[name]
        if ax is None:  # a scalar setting such as a sample rate: the same value the evaluation uses
            feeds[name] = np.asarray(scalar_value(TensorSpec(name=name, shape=[], dtype=str(np.dtype(dtype))),
                                                  dims)[0], dtype=dtype)
            continue
        concrete = []
        for i, d in enumerate(shape):
            if isinstance(d, int) and d > 0:
                concrete.append(d)
            elif i == ax:
                concrete.append(n)
            else:
                # an unnamed dim is called "<input>_dim<i>" by the model handle (and by --dim)
                v = int(dims.get(str(d), dims.get(f"{name}_dim{i}", 16)) if isinstance(d, str) and d
                        else dims.get(f"{name}_dim{i}", 16))
                concrete.append(AUDIO_SAMPLES if str(d) in AUDIO_DIMS and v <= 1 else v)
        if not (isinstance(shape[ax], int) and shape[ax] > 0):
            concrete[ax] = n
        low = name.lower()
        if np.issubdtype(dtype, np.floating):
            arr = rng.standard_normal(concrete).astype(dtype)
        elif "mask" in low:
            arr = np.ones(concrete, dtype=dtype)
        elif "type" in low or "position" in low:
            arr = np.zeros(concrete, dtype=dtype)
        elif dtype == np.bool_:
            arr = np.ones(concrete, dtype=bool)
        else:
            arr = rng.integers(0, 100, size=concrete).astype(dtype)
        feeds[name] = arr
    return with_empty_past(sess, feeds)


def build_eval_set(data: Any, sess: OrtSession, dims: dict[str, int], limit: int, seed: int) -> EvalSet:
    """Evaluation rows: eval split, else calibration, else train, else random (labelled so)."""
    batch = fixed_batch(sess)
    for role in ("eval", "calibration", "train"):
        ds = getattr(data, role, None) if data is not None else None
        if ds is None or getattr(ds, "kind", "real") == "random":
            continue
        feeds, labels = dataset_feeds(ds, sess, limit, role)
        name = f"{getattr(ds, 'name', role) or role} [{role} split]"
        return EvalSet(name, "real", feeds, labels, batch, feed_axes(sess))
    n = min(limit, 32)
    if batch:
        n = batch * max(1, n // batch)
    return EvalSet("random", "random", random_feeds(sess, dims, n, seed), None, batch, feed_axes(sess))


def run_all(sess: OrtSession, evalset: EvalSet, cancel: Any = None,
            output_names: list[str] | None = None) -> list[np.ndarray]:
    """All outputs over all rows, concatenated along the batch axis."""
    chunks: list[list[np.ndarray]] = []
    for feeds in evalset.batches():
        if cancel is not None:
            cancel.raise_if_cancelled()
        chunks.append(sess.run(output_names, feeds))
    if not chunks:
        return []
    return [np.concatenate([c[i] for c in chunks], axis=0) if np.ndim(chunks[0][i]) else chunks[0][i]
            for i in range(len(chunks[0]))]


def class_output_index(names: list[str], outputs: list[np.ndarray]) -> int | None:
    """The output that holds class scores (for top-1), or None when there is none."""
    for i, (name, arr) in enumerate(zip(names, outputs)):
        if "logit" in name.lower() and arr.ndim >= 2 and arr.shape[-1] >= 2:
            return i
    for i, arr in enumerate(outputs):
        if arr.ndim == 2 and arr.shape[-1] >= 2 and np.issubdtype(arr.dtype, np.floating):
            return i
    return None


@dataclass
class Fidelity:
    """The guardrail's verdict material: the task's own fidelity plus the cosine/|Δ| every task shows."""

    n: int
    mean_cosine: float
    min_cosine: float
    max_abs_error: float
    top1_agreement: float | None
    top1_before: float | None = None
    top1_after: float | None = None
    extra: dict[str, float] = field(default_factory=dict)
    task: str = "classification"
    task_fidelity: Any = None       # slimline.core.tasks.TaskFidelity for the task's output

    def passes(self, min_cosine: float, min_top1: float, budgets: Any = None) -> bool:
        return self.verdict(min_cosine, min_top1, budgets)[0]

    def verdict(self, min_cosine: float, min_top1: float, budgets: Any = None) -> tuple[bool, str]:
        """(ok, budget in words). Class scores: the step's cosine and top-1 agreement budgets; an
        embedding: the step's cosine budget on the pooled vector; other tasks: the pipeline's budget."""
        tf = self.task_fidelity
        if self.task == "classification" or tf is None:
            ok = np.isfinite(self.mean_cosine) and self.mean_cosine >= min_cosine
            if self.top1_agreement is not None:
                ok = ok and self.top1_agreement >= min_top1
            budget = f"mean cosine ≥ {min_cosine}" + (
                f", top-1 agreement ≥ {min_top1}" if self.top1_agreement is not None else "")
            return bool(ok), budget
        from slimline.core.pipeline import Budgets
        from slimline.core.tasks import budget_check

        b = budgets if budgets is not None else Budgets()
        if self.task == "embedding":
            b = b.model_copy(update={"embedding_min_cosine": min_cosine})
        ok, why = budget_check(self.task, tf, b)
        return ok, why or f"{self.task} budget"

    def summary(self) -> str:
        tf = self.task_fidelity
        if self.task != "classification" and tf is not None:
            return f"{tf.summary()}, max |Δ| {self.max_abs_error:.4g} ({self.task})"
        s = f"mean cosine {self.mean_cosine:.5f}, min cosine {self.min_cosine:.5f}, max |Δ| {self.max_abs_error:.4g}"
        if self.top1_agreement is not None:
            s += f", top-1 agreement {self.top1_agreement:.4f}"
        return s


def task_dataset(evalset: EvalSet) -> Any:
    """The eval rows as the dataset-like object core.tasks reads (inputs for masks/ids, labels, name)."""
    from types import SimpleNamespace

    return SimpleNamespace(inputs=evalset.feeds, labels=evalset.labels, name=evalset.name, kind=evalset.kind)


def guess_task(model: Any, source_model: Any, ref_out: list[np.ndarray], evalset: EvalSet,
               override: str | None) -> Any:
    """The task (slimline.core.tasks.TaskGuess): the pipeline's setting, else guessed with the original's
    config (a converted model has lost its Hugging Face architectures) and this model's outputs."""
    from slimline.core.tasks import resolve_task

    probe = model
    if source_model is not None and getattr(source_model, "meta", None):
        probe = model.model_copy(update={"meta": {**dict(source_model.meta), **dict(model.meta or {})}})
    return resolve_task(override, probe, ref_out, task_dataset(evalset))


def fidelity(names: list[str], ref: list[np.ndarray], out: list[np.ndarray], labels: np.ndarray | None,
             task: str = "classification", evalset: EvalSet | None = None) -> Fidelity:
    """Per-row cosine and max abs error over every float output, plus the task's own fidelity
    (core.tasks): top-1 agreement only for class scores, pooled cosine for embeddings, ..."""
    cos_all: list[np.ndarray] = []
    max_abs = 0.0
    for r, o in zip(ref, out):
        if not np.issubdtype(np.asarray(r).dtype, np.floating):
            continue
        r64, o64 = np.asarray(r, np.float64), np.asarray(o, np.float64)
        if r64.shape != o64.shape:
            return Fidelity(len(r64), 0.0, 0.0, float("inf"), 0.0 if r64.ndim else None, task=task)
        cos_all.append(row_cosines(r64, o64))
        max_abs = max(max_abs, max_abs_error(r64, o64))
    cos = np.concatenate(cos_all) if cos_all else np.array([1.0])
    n = int(ref[0].shape[0]) if ref and np.ndim(ref[0]) else 1
    agree = before = after = None
    tf = None
    if task == "classification":
        idx = class_output_index(names, ref)
        if idx is not None:
            agree = top1_agreement(ref[idx], out[idx])
            if labels is not None and labels.shape == ref[idx].shape[:-1]:
                before = top1_accuracy(ref[idx], labels)
                after = top1_accuracy(out[idx], labels)
    elif ref:
        from slimline.core.tasks import fidelity_for

        idx = next((i for i, r in enumerate(ref) if np.issubdtype(np.asarray(r).dtype, np.floating)), 0)
        tf = fidelity_for(task, ref[idx], out[idx], task_dataset(evalset) if evalset is not None else None)
    return Fidelity(n, float(cos.mean()), float(cos.min()), max_abs, agree, before, after, task=task,
                    task_fidelity=tf)


@dataclass
class Timing:
    p50_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    warmup: int
    threads: int
    batch: int
    input_kind: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def compare_latency(path_a: Path, path_b: Path, feeds: dict[str, np.ndarray], *, threads: int | None,
                    warmup: int = 5, runs: int = 20, input_kind: str = "dataset",
                    cancel: Any = None) -> tuple[Timing, Timing]:
    """p50/p90 of two models on the same input; runs interleaved A,B,A,B so load drift hits both."""
    n_threads = resolve_threads(threads)
    sa, sb = make_session(path_a, n_threads), make_session(path_b, n_threads)
    for _ in range(warmup):
        sa.run(None, feeds)
        sb.run(None, feeds)
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(runs):
        if cancel is not None:
            cancel.raise_if_cancelled()
        t0 = time.perf_counter()
        sa.run(None, feeds)
        t1 = time.perf_counter()
        sb.run(None, feeds)
        t2 = time.perf_counter()
        ta.append((t1 - t0) * 1000)
        tb.append((t2 - t1) * 1000)
    batch = max((int(v.shape[0]) for v in feeds.values() if v.ndim), default=1)

    def stats(ts: list[float]) -> Timing:
        q = np.percentile(ts, [50, 90])
        return Timing(float(q[0]), float(q[1]), float(statistics.fmean(ts)), runs, warmup, n_threads, batch, input_kind)

    return stats(ta), stats(tb)


def cpu_int8_flags() -> dict[str, bool]:
    """Which int8 dot-product instructions this CPU has (they decide whether INT8 is fast)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {k: k in flags for k in ("avx2", "avx512_vnni", "avx_vnni", "amx_int8")}


def node_errors(float_path: Path, quant_path: Path, evalset: EvalSet, candidates: list[tuple[str, str, list[str]]],
                max_rows: int = 16, cancel: Any = None) -> list[tuple[str, float]]:
    """Rank candidate nodes by the error they add: rel. error of their output minus that of their inputs.

    ``candidates``: (node name, output tensor, input activation tensors) from the float model.
    Tensors missing in the quantized graph (renamed by QOperator) are skipped.
    """
    import onnx

    fm = onnx.load(str(float_path))
    qm = onnx.load(str(quant_path))
    q_tensors = {o for n in qm.graph.node for o in n.output} | {i.name for i in qm.graph.input}
    f_tensors = {o for n in fm.graph.node for o in n.output} | {i.name for i in fm.graph.input}
    # In QDQ graphs a node's output is rounded by the Q→DQ pair after it: that rounding is the node's doing.
    q_of = {n.input[0]: n.output[0] for n in qm.graph.node if n.op_type == "QuantizeLinear" and n.input}
    dq_of = {n.input[0]: n.output[0] for n in qm.graph.node if n.op_type == "DequantizeLinear" and n.input}
    rounded = {t: dq_of[q_of[t]] for t in q_of if q_of[t] in dq_of}
    wanted: list[str] = []
    for _, out, ins in candidates:
        for t in [out, *ins]:
            if t in q_tensors and t in f_tensors and t not in wanted:
                wanted.append(t)
    if not wanted:
        return []
    q_wanted = wanted + [rounded[t] for t in wanted if t in rounded]
    have = {o.name for o in fm.graph.output}
    fm.graph.output.extend([onnx.ValueInfoProto(name=t) for t in wanted if t not in have])
    have = {o.name for o in qm.graph.output}
    qm.graph.output.extend([onnx.ValueInfoProto(name=t) for t in q_wanted if t not in have])
    fs = make_session(fm.SerializeToString(), optimize=False, external_data_dir=Path(float_path).parent)
    qs = make_session(qm.SerializeToString(), optimize=False, external_data_dir=Path(quant_path).parent)
    keep = max(max_rows, evalset.batch or 1)
    rows = evalset.head(keep)
    fo = dict(zip(wanted, run_all(fs, rows, cancel, wanted)))
    qo = dict(zip(q_wanted, run_all(qs, rows, cancel, q_wanted)))

    def rel(t: str, after_rounding: bool = False) -> float:
        if t not in fo:
            return 0.0
        qt = rounded.get(t, t) if after_rounding else t
        a, b = np.asarray(fo[t], np.float64), np.asarray(qo[qt], np.float64)
        if a.shape != b.shape:
            return 0.0
        return channel_rel_error(a, b)

    scores = []
    for name, out, ins in candidates:
        if out not in fo:
            continue
        base = max([rel(t) for t in ins if t in fo] or [0.0])
        scores.append((name, rel(out, after_rounding=True) - base))
    scores.sort(key=lambda s: s[1], reverse=True)
    return scores
