"""Everything a layer-wise analysis or search needs before its first probe, in one place.

The step's input model (a torch model is converted to ONNX by the convert step first when the step
needs ONNX, through the same step cache a pipeline run uses, so the two share the file), the
evaluation rows (capped, or random inputs said as such), the task (guessed on the original, or the
pipeline's ``evaluation.task``), the original's outputs and the metric that judges every variant.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimline.core.errors import SlimlineError
from slimline.core.handle import ModelHandle
from slimline.core.pipeline import Evaluation
from slimline.core.plugin import CancelToken, StepContext
from slimline.core.sensitivity.metric import LMMetricProbe, LMScores, MetricProbe
from slimline.core.sensitivity.models import Mode
from slimline.core.sensitivity.protocol import Layerwise, layerwise_for

Progress = Callable[[float, str], None]
# Short names for the CLI's --step (plugin ids work too).
STEP_NAMES = {"quantize_dynamic": "builtin.quantize_dynamic", "quantize_static": "builtin.quantize_static",
              "quantize_weight_only": "builtin.quantize_weight_only",
              "prune": "builtin.prune_magnitude", "prune_magnitude": "builtin.prune_magnitude",
              "prune_structured": "builtin.prune_structured", "lowrank": "builtin.lowrank"}


def step_id(name: str) -> str:
    """The plugin id for a short step name (``quantize_static``) or an id."""
    return STEP_NAMES.get(name, name)


def default_modes(step: str) -> list[Mode]:
    """The step's own choice (``sensitivity_modes`` on the plugin class), else quantize: each layer alone and each
    layer alone left out; prune/low-rank: each layer alone per level."""
    from slimline.core.registry import get_plugin

    try:
        own = getattr(get_plugin(step_id(step)), "sensitivity_modes", None)
    except Exception:  # noqa: BLE001 - an unknown step fails in prepare() with a clear message
        own = None
    if own:
        return [m for m in ("alone", "all_but") if m in own]
    return ["alone", "all_but"] if "quantize" in step_id(step) else ["alone"]


@dataclass
class Prepared:
    """The analysed model, its step, the data and the judge."""

    model: ModelHandle                 # the original (the reference for every metric)
    step_input: ModelHandle            # what the step works on
    plugin_cls: Any
    params: Any                        # the step's validated Params
    dataset: Any                       # evaluation rows (slimline.core.data.Dataset)
    kind: str                          # "dataset" | "random"
    bundle: Any                        # DataBundle given to the step (calibration for static INT8)
    ctx: StepContext
    reference: Any                     # the original's first output (np.ndarray), or its LMScores
    probe: MetricProbe | LMMetricProbe
    threads: int = 0
    notes: list[str] = field(default_factory=list)
    work: Path = Path(".")
    windows: Any = None                # TextWindows the probes score a language model on (else None)

    def layerwise(self) -> Layerwise:
        return layerwise_for(self.plugin_cls(), self.step_input, self.params, self.ctx)

    def outputs(self, handle: ModelHandle) -> Any:
        """The variant's first output over the evaluation rows (its session is not kept: probes are many);
        for a language model its :class:`LMScores` on the windows."""
        if self.windows is not None:
            ref = self.reference if isinstance(self.reference, LMScores) else None
            return lm_scores(handle, self.windows, ref, self.threads, self.ctx.cancel)
        from slimline.core.runtime import clear_session_cache, predict

        try:
            return predict(handle, self.dataset, threads=self.threads)[0]
        finally:
            clear_session_cache()


    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def lm_scores(handle: ModelHandle, windows: Any, reference: LMScores | None, threads: int, cancel: Any) -> LMScores:
    """A language model's window summaries (and log p of the reference's top-k) through the run's LM runner."""
    from slimline.core.lm.evaluate import score_windows
    from slimline.core.lm.runners import open_runner

    runner = open_runner(handle, threads=threads)
    try:
        sums, logps = score_windows(runner, windows, reference.summaries if reference is not None else None,
                                    cancel=cancel)
    finally:
        runner.close()
    return LMScores(summaries=sums, logp_of_ref_top=logps)


def data_fingerprint(dataset: Any) -> str:
    """Content hash of the evaluation rows and labels (what the numbers were measured on)."""
    h = hashlib.sha256()
    if dataset is None:
        return ""
    for k in sorted(dataset.inputs):
        a = np.ascontiguousarray(dataset.inputs[k])
        h.update(f"{k}:{a.dtype}:{a.shape}".encode())
        h.update(a.tobytes())
    if dataset.labels is not None:
        h.update(np.ascontiguousarray(dataset.labels).tobytes())
    return h.hexdigest()


def prepare(model: ModelHandle, data: Any, step: str, params: dict[str, Any], *, workspace: Path,
            evaluation: Evaluation | None = None, max_rows: int = 256, threads: int = 0, seed: int = 0,
            cancel: CancelToken | None = None, progress: Progress | None = None) -> Prepared:
    """Resolve the step, convert the model if the step needs it, load the rows and the original's outputs."""
    from slimline.core.data import DataBundle, random_dataset
    from slimline.core.registry import get_plugin

    cancel = cancel or CancelToken()
    say = progress or (lambda f, m: None)
    evaluation = evaluation or Evaluation()
    try:
        plugin_cls = get_plugin(step_id(step))
    except Exception as exc:  # unknown id: name the choices
        raise SlimlineError(f"no step {step!r}", subject="--step",
                            hint=f"choose one of {', '.join(sorted(STEP_NAMES))} or a plugin id") from exc
    if not hasattr(plugin_cls, "layerwise"):
        raise SlimlineError(f"{plugin_cls.id} cannot be applied layer by layer", subject="--step",
                            hint=f"choose one of {', '.join(sorted(STEP_NAMES))}")
    try:
        validated = plugin_cls.Params.model_validate(params or {})
    except ValueError as exc:   # pydantic's ValidationError names the field
        first = str(exc).splitlines()
        raise SlimlineError(f"invalid parameters for {plugin_cls.id}: {' '.join(first[1:3]) or first[0]}",
                            subject="--params", hint="`slimline plugins` lists each step's parameters") from None
    if not model.capabilities.run:
        raise SlimlineError(model.capabilities.reason or "this model cannot be run", subject=model.path,
                            hint="open a runnable model (ONNX, a torch archive, an HF folder)")
    bundle = data if data is not None else DataBundle()
    ev = getattr(bundle, "eval", None)
    kind = "dataset"
    notes: list[str] = []
    if getattr(bundle, "text", None) is None and _causal_lm(model):
        raise SlimlineError("a language model is ranked by perplexity on text: no text file given",
                            subject="--data", hint="give a plain UTF-8 text file (.txt), e.g. --data corpus.txt")
    if ev is None:
        ev, kind = random_dataset(model, 32, seed=seed), "random"
        notes.append("no evaluation data: RANDOM inputs, so the ranking shows fidelity on noise (a smoke check)")
    dataset = ev.take(max_rows)
    if len(dataset) < len(ev):
        notes.append(f"evaluated on the first {len(dataset)} of {len(ev)} rows")
    work = Path(workspace) / "sensitivity" / f".work-{os.getpid()}-{hashlib.sha1(model.path.encode()).hexdigest()[:8]}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if bundle.calibration is None and plugin_cls.needs_data:
        bundle = DataBundle(eval=dataset, calibration=dataset.take(DataBundle.CALIBRATION_ROWS), train=bundle.train)
        notes.append("calibrated on the evaluation rows (no calibration data given): optimistic for static INT8")
    try:
        return _prepared(model, plugin_cls, validated, bundle, dataset, kind, notes, work, workspace, evaluation,
                         threads, seed, cancel, say)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _causal_lm(model: ModelHandle) -> bool:
    from slimline.core.lm.evaluate import causal_lm_guess

    try:
        return causal_lm_guess(model) is not None
    except Exception:  # noqa: BLE001 - an unreadable config is not a language model to this check
        return False


def _prepared(model: ModelHandle, plugin_cls: Any, validated: Any, bundle: Any, dataset: Any, kind: str,
              notes: list[str], work: Path, workspace: Path, evaluation: Evaluation, threads: int, seed: int,
              cancel: CancelToken, say: Progress) -> Prepared:
    from slimline.core.tasks import TaskGuess, resolve_task

    say(0.02, "opening the step's input")
    step_input = convert_if_needed(plugin_cls, model, bundle, Path(workspace), cancel, threads)
    if step_input.path != model.path:
        notes.append(f"{plugin_cls.id} needs ONNX: analysed the converted model {Path(step_input.path).name} "
                     "(builtin.convert_onnx, default settings)")
    cancel.raise_if_cancelled()
    ctx = StepContext(work_dir=work / "step", cancel=cancel, data=bundle, source_model=model,
                      device="cpu", threads=threads or None, seed=seed, evaluation=evaluation)
    text = getattr(bundle, "text", None)
    if text is not None:   # a language model on a text file: perplexity on the first windows
        from slimline.core.lm.evaluate import lm_text_task

        windows = text.take(len(dataset))
        say(0.06, f"original model on {windows.describe()}")
        ref = lm_scores(model, windows, None, threads, cancel)
        task = lm_text_task(evaluation, model, text.source) or TaskGuess(
            task="token_logits", reason="token windows of a text file (the run's language-model data)")
        probe: MetricProbe | LMMetricProbe = LMMetricProbe(task, ref, windows, evaluation.budgets)
        return Prepared(model=model, step_input=step_input, plugin_cls=plugin_cls, params=validated,
                        dataset=dataset, kind=kind, bundle=bundle, ctx=ctx, reference=ref, probe=probe,
                        threads=threads, notes=notes, work=work, windows=windows)
    say(0.06, f"original model on {len(dataset)} rows")
    from slimline.core.runtime import clear_session_cache, predict

    reference = predict(model, dataset, threads=threads)[0]
    clear_session_cache()
    task = resolve_task(evaluation.task, model, reference, dataset if kind == "dataset" else None)
    probe = MetricProbe(task, reference, dataset, evaluation.budgets, kind)
    return Prepared(model=model, step_input=step_input, plugin_cls=plugin_cls, params=validated, dataset=dataset,
                    kind=kind, bundle=bundle, ctx=ctx, reference=reference, probe=probe, threads=threads,
                    notes=notes, work=work)


def convert_if_needed(plugin_cls: Any, model: ModelHandle, bundle: Any, workspace: Path, cancel: CancelToken,
                      threads: int = 0) -> ModelHandle:
    """``model`` itself, or its ONNX conversion (from the workspace's step cache when present) when the
    step takes ONNX only; the cache key is the pipeline runner's, so runs and analyses share the file."""
    if model.family in plugin_cls.input_formats:
        return model
    if not ("onnx" in plugin_cls.input_formats and model.family == "torch"):
        raise SlimlineError(f"{plugin_cls.id} takes {', '.join(plugin_cls.input_formats)} models, "
                            f"this is {model.family}", subject=model.path, hint="open a model the step accepts")
    from slimline.core.cache import StepCache, handle_from_record, step_key
    from slimline.core.registry import get_plugin

    conv = get_plugin("builtin.convert_onnx")
    params = conv.Params()
    key = step_key(model.content_hash(), conv.id, conv.version, params.model_dump(mode="json"), "", 0)
    cache = StepCache(Path(workspace) / "cache")
    rec = cache.load(key)
    if rec is None:
        work = cache.work_dir(key)
        try:
            out = conv().run(model, params, StepContext(work_dir=work, cancel=cancel, data=bundle,
                                                        threads=threads or None))
            rec = cache.commit(key, work, {"model": out.model.model_dump(mode="json"), "metrics": out.metrics,
                                           "notes": out.notes, "warnings": out.warnings, "tables": out.tables})
        except BaseException:
            cache.clean_temp(os.getpid())
            raise
    handle = handle_from_record(rec)
    kept = {k: v for k, v in model.dim_defaults.items() if k in handle.dim_defaults}
    return handle.with_dims(**kept) if kept else handle


__all__ = ["STEP_NAMES", "Prepared", "convert_if_needed", "data_fingerprint", "default_modes", "lm_scores", "prepare",
           "step_id"]
