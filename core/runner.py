"""Execute a pipeline: each step turns an input handle into a new file, then is measured.

Runs inside the job's child process (see jobs.py) or inline for tests. Every
event goes through ``emit`` as a typed event (slimline.core.results); jobs.py turns
it into a dict only to send it over the process pipe, so the CLI and the GUI show
the same stream.
"""
from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slimline.core.cache import StepCache, canonical, content_fingerprint, handle_from_record, step_key
from slimline.core.errors import Cancelled, SlimlineError, StepFailed
from slimline.core.evaluate import Evaluator, flags_for
from slimline.core.handle import ModelHandle
from slimline.core.history import new_run_id, save_run
from slimline.core.pipeline import Pipeline
from slimline.core.plugin import CancelToken, StepContext
from slimline.core.results import (
    LogEvent,
    Measurement,
    MetricEvent,
    ProgressEvent,
    RunData,
    RunError,
    RunRecord,
    StepResult,
    StepResultEvent,
    StepStartedEvent,
)

Emit = Callable[[Any], None]  # takes a typed job event (slimline.core.results.JobEvent)


class _Throttle:
    """Limit progress events to ~20/s so a chatty step cannot flood the UI."""

    def __init__(self, emit: Emit, interval: float = 0.05) -> None:
        self.emit, self.interval, self.last = emit, interval, 0.0

    def __call__(self, event: Any, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            self.emit(event)


def load_data(pipeline: Pipeline, model: ModelHandle, data_path: str | None,
              train_path: str | None) -> Any:
    """DataBundle for the run: eval from --data/pipeline, train/calibration from train_data."""
    return load_bundle(pipeline.evaluation, model, data_path or pipeline.evaluation.data,
                       train_path or pipeline.evaluation.train_data)


def load_bundle(evaluation: Any, model: ModelHandle, eval_path: str | None, train_path: str | None) -> Any:
    """The data as every job reads it (runs, sensitivity, search): token windows for a language model on a
    text file, else rows checked against the model's inputs; None when no file is given."""
    from slimline.core.data import DataBundle, check_dataset

    if not eval_path and not train_path:
        return None
    from slimline.core.lm.evaluate import lm_text_task, text_bundle

    if model.capabilities.run and eval_path and lm_text_task(evaluation, model, eval_path) is not None:
        return text_bundle(evaluation, model, str(eval_path), train_path)  # token windows, not lines
    bundle = DataBundle.from_paths(eval=eval_path, train=train_path, model=model)
    if model.capabilities.run:
        for ds in (bundle.eval, bundle.train, bundle.calibration):
            if ds is not None:
                check_dataset(ds, model)
    return bundle


def run_pipeline(pipeline: Pipeline, model: ModelHandle, *, workspace: Path, emit: Emit,
                 cancel: CancelToken | None = None, data: Any = None, run_id: str | None = None,
                 threads: int = 0, use_cache: bool = True, data_paths: tuple[str | None, str | None] = (None, None),
                 ) -> RunRecord:
    """Run all enabled steps; returns the run record (also saved in the workspace)."""
    cancel = cancel or CancelToken()
    workspace = Path(workspace).resolve()  # steps may change directory (quantize pre-processing)
    cache = StepCache(workspace / "cache")
    run_id = run_id or new_run_id()
    progress = _Throttle(emit)
    steps = pipeline.enabled_steps()
    total = len(steps) + 1  # +1: measuring the original
    from slimline.core.metrics import environment

    record = RunRecord(run_id=run_id, created=time.strftime("%Y-%m-%dT%H:%M:%S"), status="running",
                       pipeline=pipeline.model_dump(mode="json"), model=model,
                       data=RunData(eval=data_paths[0], train=data_paths[1]), environment=environment())
    save_run(workspace, record)
    ev_data = getattr(data, "eval", None)
    evaluator = Evaluator(pipeline.evaluation, eval_data=ev_data, threads=threads,
                          device=pipeline.evaluation.device)
    if getattr(data, "text", None) is not None:  # a language model on a text file
        from slimline.core.lm.evaluate import LMEvaluator, lm_text_task, prepare

        lm = pipeline.evaluation.lm
        evaluator.lm = LMEvaluator(prepare(model, lm, data.text), lm, device=pipeline.evaluation.device,
                                   threads=pipeline.evaluation.latency.threads or threads)
        evaluator.task = lm_text_task(pipeline.evaluation, model, data.text.source)
    data_fp = data_fingerprint(pipeline, data, data_paths)
    eval_key = step_key("eval", "", "", pipeline.evaluation.model_dump(mode="json"),
                        canonical([data_fp, files_fingerprint(pipeline.evaluation.lm.model_dump(mode="json"))]),
                        threads)

    def measure(handle: ModelHandle, input_handle: ModelHandle, key: str, index: int,
                sid: str) -> tuple[Measurement, bool]:
        """Size/accuracy (from the eval cache when present) plus latency timed now against the input.

        Latency is never reused from the cache: a figure from another moment (a busy
        machine, other threads) would be compared with a fresh one. The cache keeps the
        last figures with their conditions, for the record only.
        """
        progress(ProgressEvent(overall=index / total, step_id=sid, fraction=0.9,
                               message="measuring size, latency and accuracy"), force=True)
        cached = _cached_eval(cache.load_eval(key, eval_key)) if use_cache else None
        evaluator.progress = lambda f, m: progress(ProgressEvent(  # rows/s and ETA while evaluating
            overall=(index + 0.9 + 0.1 * f) / total, step_id=sid, fraction=0.9 + 0.1 * f, message=m))
        if evaluator.lm is not None:  # language model: generation timing replaces per-batch latency
            result = evaluator.evaluate(handle, cancel, reuse=cached)
        else:
            result = cached if cached is not None else evaluator.evaluate(handle, cancel, latency=False)
        if handle.capabilities.run and evaluator.lm is None:
            lat = evaluator.latency(handle, input_handle if input_handle.capabilities.run else None, cancel)
            result = result.model_copy(update={"latency": lat})
        cache.save_eval(key, eval_key, result.to_dict())
        return result, cached is not None

    # --- the original model -------------------------------------------------------------
    emit(StepStartedEvent(step_id="original", index=0, total=total, title="Original model"))
    t0 = time.perf_counter()
    evaluator.progress = lambda f, m: progress(ProgressEvent(overall=f / total, step_id="original", fraction=f,
                                                             message=m))
    original_eval = evaluator.evaluate(model, cancel)
    noise_flags, noise_reasons = _noise_flags(original_eval)
    original = StepResult.from_measurement(original_eval, step_id="original", plugin="",
                                           title=f"Original ({model.name})", model=model, flags=noise_flags,
                                           warnings=noise_reasons, duration_s=time.perf_counter() - t0)
    record.results.append(original)
    emit(StepResultEvent(result=original))
    save_run(workspace, record)

    from slimline.core.registry import get_plugin

    current, current_eval = model, original_eval
    step_id = "original"
    try:
        for i, step in enumerate(steps, start=1):
            step_id = step.id
            cancel.raise_if_cancelled()
            plugin_cls = get_plugin(step.plugin)
            plugin = plugin_cls()
            params = plugin_cls.Params.model_validate(step.params)
            title = plugin_cls.title
            emit(StepStartedEvent(step_id=step.id, index=i, total=total, title=title))
            problems = [p for p in plugin.check(current, params) if p.severity == "error"]
            missing = [need for need in plugin_cls.needs_data if data is None
                       or (getattr(data, need, None) is None and getattr(data, "eval", None) is None)]
            if missing:
                raise StepFailed(f"needs {', '.join(missing)} data and none was given",
                                 hint="pass --data (and --train-data) or set evaluation.data in the pipeline",
                                 subject=f"step {step.id} ({title})")
            if problems:
                raise StepFailed("; ".join(str(p) for p in problems), subject=f"step {step.id} ({title})",
                                 hint=problems[0].fix or "change the step's parameters or remove it")
            params_json = params.model_dump(mode="json")
            key = step_key(current.content_hash(), plugin_cls.id, plugin_cls.version, params_json,
                           canonical([data_fp, files_fingerprint(params_json)]), 0)
            t0 = time.perf_counter()
            rec = cache.load(key) if use_cache else None
            cached = rec is not None
            if rec is None:
                work = cache.work_dir(key)

                def on_progress(fraction: float, message: str, _sid: str = step.id, _i: int = i) -> None:
                    progress(ProgressEvent(overall=(_i + 0.9 * fraction) / total, step_id=_sid,
                                           fraction=fraction, message=message))

                loss_throttle = _Throttle(emit, interval=0.02)  # ≤50 curve points/s reach the UI

                def on_event(kind: str, payload: dict[str, Any], _sid: str = step.id,
                             _loss: _Throttle = loss_throttle) -> None:
                    if kind == "log":
                        emit(LogEvent(step_id=_sid, message=str(payload.get("message", ""))))
                    elif kind == "loss":
                        _loss(MetricEvent(step_id=_sid, kind=kind, payload=payload))
                    else:
                        emit(MetricEvent(step_id=_sid, kind=kind, payload=payload))

                ctx = StepContext(work_dir=work, cancel=cancel, progress_cb=on_progress, event_cb=on_event,
                                  data=data, source_model=model, device=pipeline.evaluation.device,
                                  threads=threads or None, evaluation=pipeline.evaluation)
                try:
                    out = plugin.run(current, params, ctx)
                except (Cancelled, SlimlineError):
                    cache.clean_temp(os.getpid())
                    raise
                except Exception as exc:  # a plugin bug still names the step and keeps the trace
                    cache.clean_temp(os.getpid())
                    err = StepFailed(f"{type(exc).__name__}: {exc}", subject=f"step {step.id} ({title})",
                                     hint="open the log for the full error; try other parameters")
                    err.details = traceback.format_exc()  # type: ignore[attr-defined]
                    raise err from exc
                try:
                    rec = cache.commit(key, work, {
                        "model": out.model.model_dump(mode="json"), "metrics": out.metrics, "notes": out.notes,
                        "warnings": out.warnings, "tables": out.tables}, replace=not use_cache)
                except OSError as exc:  # disk full, read-only workspace
                    cache.clean_temp(os.getpid())
                    raise StepFailed(f"could not store the step's output in {cache.root} "
                                     f"({exc.strerror or exc})", subject=f"step {step.id} ({title})",
                                     hint="free disk space or choose another workspace folder, "
                                          "then run again") from None
            new_handle = handle_from_record(rec)
            step_eval, eval_cached = measure(new_handle, current, key, i, step.id)
            flags, reasons = flags_for(step_eval, current_eval, original_eval, pipeline.evaluation)
            notes = list(rec.get("notes", []))
            if eval_cached and step_eval.latency:
                notes.append("size and accuracy reused from the cache (same model, data and settings); "
                             "latency timed again in this run, interleaved with the step's input")
            result = StepResult.from_measurement(
                step_eval, step_id=step.id, plugin=plugin_cls.id, title=title, model=new_handle,
                metrics=rec.get("metrics", {}), notes=notes,
                warnings=list(rec.get("warnings", [])) + reasons, tables=rec.get("tables", {}), flags=flags,
                duration_s=time.perf_counter() - t0, cached=cached and eval_cached)
            record.results.append(result)
            emit(StepResultEvent(result=result))
            save_run(workspace, record)
            current, current_eval = new_handle, step_eval
    except Cancelled:
        record.status = "cancelled"
        save_run(workspace, record)
        raise
    except SlimlineError as exc:
        exc.step_id = step_id  # type: ignore[attr-defined]
        record.status = "failed"
        record.error = RunError(**{**exc.to_dict(), "step_id": step_id, "details": getattr(exc, "details", "")})
        save_run(workspace, record)
        raise
    except Exception as exc:
        record.status = "failed"
        record.error = RunError(message=f"{type(exc).__name__}: {exc}", hint="see the log for details",
                                subject=f"step {step_id}", step_id=step_id, details=traceback.format_exc())
        save_run(workspace, record)
        raise
    record.status = "done"
    record.final_model = current
    save_run(workspace, record)
    return record


def data_fingerprint(pipeline: Pipeline, data: Any, data_paths: tuple[str | None, str | None]) -> str:
    """Content identity of every data file of the run: the one place step and evaluation keys get their data part.

    Every step is handed the run's data (``ctx.data``, ``ctx.evaluation``) and may read it even
    when it needs none (the weight-only step calibrates on the evaluation text, LLM pruning on
    whichever text there is), so every step's key holds it: an edited text file recomputes the
    steps that could have read it instead of reusing their stale output.
    """
    paths: set[str] = {str(p) for p in data_paths if p}
    ev = pipeline.evaluation
    paths |= {str(p) for p in (ev.data, ev.train_data) if p}
    for role in ("eval", "train", "calibration", "text", "train_text"):
        src = getattr(getattr(data, role, None), "source", None)
        if src and Path(str(src)).exists():
            paths.add(str(src))
    resolved = sorted({str(Path(p).expanduser().resolve()) for p in paths})
    return canonical({p: content_fingerprint(p) for p in resolved})


def files_fingerprint(params: Any) -> str:
    """Content identity of the files named in a step's params or the LM settings (a text file, a prompt list).

    A path in the params alone would keep a stale result when the file's content changes.
    """
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif isinstance(value, str) and value and len(value) < 4096 and ("/" in value or "." in value):
            try:
                p = Path(value).expanduser()
                if p.is_file():  # files only: a "." or a folder-valued param would hash a whole tree
                    found.add(str(p.resolve()))
            except (OSError, ValueError):
                return

    walk(params)
    return canonical({p: content_fingerprint(p) for p in sorted(found)}) if found else ""


def _cached_eval(doc: dict[str, Any] | None) -> Measurement | None:
    """A cached measurement without its latency (always re-timed), or None when absent or of an older shape."""
    if doc is None or "reference_outputs" in doc:
        return None
    try:
        return Measurement.model_validate({**doc, "latency": None})
    except ValueError:
        return None


def _noise_flags(m: Measurement) -> tuple[list[str], list[str]]:
    """The original has no input to compare with, but its own timing can still be noisy: say so."""
    reasons = [f"latency at batch {b} is noisy ({'; '.join(rep.noise_reasons)})"
               for b, rep in (m.latency or {}).items() if rep.noisy]
    gen = m.lm.generation if m.lm is not None else None
    if gen is not None and gen.noise:
        reasons.append(f"decode speed is noisy ({'; '.join(gen.noise)})")
    return (["noisy"] if reasons else []), reasons
