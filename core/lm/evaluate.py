"""Measure a language model on a text file: perplexity, agreement and KL vs the original, generations, speed.

Used by :class:`slimline.core.evaluate.Evaluator` when the task is ``token_logits`` and the
evaluation data is a text file: the text becomes token windows (not one sample per
line), and each model of the run is measured the same way:

1. logits of the windows, a few at a time, each reduced at once to a small summary
   (:mod:`slimline.core.lm.score`); the original's summaries are kept for the whole run
   and every step is compared with them (never with held logits);
2. greedy continuations of the prompts, timed (prefill, decode tokens/s) — this
   replaces per-batch latency for LMs; the original's continuations are the reference
   for "first divergence";
3. the job process's peak resident memory around both.

Counts are bounded by the settings (24 windows × 128 tokens, 4 prompts × 32 tokens by
default) so measuring the original of a 135M model takes seconds, with an ETA.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimline.core.errors import DataError
from slimline.core.handle import ModelHandle
from slimline.core.lm.prompts import Prompts, load_prompts, prompts_from_text
from slimline.core.lm.report import GenerationReport, GenerationSample, LMReport, VsOriginal
from slimline.core.lm.score import WindowSummary, compare, log_probs_of, perplexity, summarize_window
from slimline.core.lm.text import TextWindows, load_tokenizer, text_windows
from slimline.core.pipeline import Budgets, Evaluation, LMSettings
from slimline.core.tasks import TaskGuess, infer_task

TEXT_SUFFIXES = (".txt", ".text")
LOGITS_BYTES = 256 << 20     # logits held at once (a batch of windows) before they are summarised
MAX_BATCH = 4                # windows per forward pass: bigger batches gain little on a CPU, and cancel/ETA lag
TRAIN_WINDOWS = 4096         # windows cut from a training text (calibration / distillation)
REUSED = ("perplexity and agreement reused from the cache (same model, text and settings); "
          "generations and speed measured again")
WARMUP_TOKENS = 2            # one short untimed generation first: one-time costs stay out of the timing

Progress = Callable[[float, str], None]


# --------------------------------------------------------------------------- is this an LM text run?


def tokenizer_folder(handle: ModelHandle) -> Path:
    """Where the model's tokenizer lives: ``meta['tokenizer_dir']``, the model folder, or the file's folder."""
    given = (handle.meta or {}).get("tokenizer_dir")
    if given:
        return Path(given)
    p = Path(handle.path)
    return p if p.is_dir() else p.parent


def causal_lm_guess(handle: ModelHandle) -> TaskGuess | None:
    """Why ``handle`` is a causal LM (config architectures, a genai folder, logits over input_ids), or None."""
    from slimline.core.lm.genai import genai_folder_of

    guess = infer_task(handle)
    if guess.task == "token_logits":
        return guess
    if handle.format == "onnx":
        if genai_folder_of(handle.path) is not None:
            return TaskGuess(task="token_logits", reason="onnxruntime-genai model folder (genai_config.json)")
        cfg = Path(handle.path).parent / "config.json"
        if cfg.is_file():
            try:
                arch = str((json.loads(cfg.read_text(encoding="utf-8")).get("architectures") or [""])[0])
            except (ValueError, OSError, AttributeError):
                arch = ""
            if arch.endswith(("ForCausalLM", "LMHeadModel")):
                return TaskGuess(task="token_logits", reason=f"causal language model (config.json beside it: {arch})")
        outs = [o for o in handle.outputs if o.name == "logits" and len(o.shape) == 3]
        if outs and any(i.name == "input_ids" for i in handle.inputs):
            return TaskGuess(task="token_logits", reason="ONNX with input_ids → logits [batch, sequence, vocabulary]")
    return None


def lm_text_task(settings: Evaluation, handle: ModelHandle, data_path: str | None) -> TaskGuess | None:
    """The task when this run measures a language model on a text file, else None (the generic path)."""
    if not data_path or Path(data_path).suffix.lower() not in TEXT_SUFFIXES:
        return None
    if settings.task == "token_logits":
        return TaskGuess(task="token_logits", reason="set in the pipeline (evaluation.task)")
    if settings.task:
        return None
    return causal_lm_guess(handle)


def text_bundle(settings: Evaluation, handle: ModelHandle, eval_path: str, train_path: str | None) -> Any:
    """A DataBundle of token windows: ``text`` (evaluation windows) and rows of windows for plugins.

    Steps that need data as rows (calibration) get the windows as ``input_ids`` /
    ``attention_mask`` rows; language-model steps read ``bundle.text`` / ``bundle.train_text``.
    """
    from slimline.core.data import DataBundle, load_dataset

    tok = load_tokenizer(tokenizer_folder(handle), subject=eval_path)
    lm = settings.lm
    windows = text_windows(eval_path, tok, length=lm.window_length, count=lm.window_count, stride=lm.stride,
                           tokenizer_name=str(tokenizer_folder(handle)))
    if lm.prompts:  # a bad prompt list fails before the run starts, naming the file
        load_prompts(lm.prompts)
    ev = windows_dataset(windows)
    train_text: TextWindows | None = None
    train = None
    if train_path and Path(train_path).suffix.lower() in TEXT_SUFFIXES:
        train_text = text_windows(train_path, tok, length=lm.window_length, count=TRAIN_WINDOWS,
                                  tokenizer_name=str(tokenizer_folder(handle)))
        train = windows_dataset(train_text)
    elif train_path:
        train = load_dataset(train_path, handle)
    notes = [f"language model text: {windows.describe()}"]
    calibration = (train or ev).take(DataBundle.CALIBRATION_ROWS)
    if train is None:
        notes.append("no training text given: steps that fine-tune or distill need train=")
    return DataBundle(eval=ev, train=train, calibration=calibration, notes=notes, text=windows,
                      train_text=train_text)


def windows_dataset(w: TextWindows) -> Any:
    """Token windows as dataset rows (``input_ids`` and a full ``attention_mask``)."""
    from slimline.core.data import Dataset

    return Dataset(name=w.name, source=w.source, inputs={"input_ids": w.ids.copy(),
                                                         "attention_mask": np.ones_like(w.ids)},
                   meta={"text_windows": w.describe()})


# --------------------------------------------------------------------------- data for the measurement


@dataclass
class LMData:
    """Everything the measurement needs besides the model: windows, prompts, tokenizer, EOS ids."""

    windows: TextWindows
    prompts: Prompts
    prompt_ids: list[list[int]]
    tokenizer: Any = field(repr=False)
    eos: set[int]
    pad_id: int | None


def prepare(handle: ModelHandle, settings: LMSettings, windows: TextWindows) -> LMData:
    """Tokenizer, prompts (the user's list, or the text's first sentences) and EOS ids of the original."""
    folder = tokenizer_folder(handle)
    tok = load_tokenizer(folder, subject=windows.source)
    prompts = load_prompts(settings.prompts) if settings.prompts else prompts_from_text(windows.source,
                                                                                         settings.prompt_count)
    ids = [list(map(int, tok(p, add_special_tokens=True)["input_ids"])) for p in prompts.texts]
    empty = [i for i, x in enumerate(ids) if not x]
    if empty:
        raise DataError(f"prompt {empty[0] + 1} has no tokens", subject=prompts.source, hint="remove empty prompts")
    pad = getattr(tok, "pad_token_id", None)
    return LMData(windows=windows, prompts=prompts, prompt_ids=ids, tokenizer=tok, eos=eos_ids(tok, folder),
                  pad_id=int(pad) if pad is not None else None)


def eos_ids(tokenizer: Any, folder: Path) -> set[int]:
    """End-of-sequence ids: the tokenizer's and those of generation_config.json / config.json (as generate uses)."""
    found: set[int] = set()
    if getattr(tokenizer, "eos_token_id", None) is not None:
        found.add(int(tokenizer.eos_token_id))
    for name in ("generation_config.json", "config.json"):
        f = folder / name
        try:
            value = json.loads(f.read_text(encoding="utf-8")).get("eos_token_id") if f.is_file() else None
        except (ValueError, OSError, AttributeError):
            value = None
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, list):
            found |= {int(v) for v in value if isinstance(v, int)}
    return found


# --------------------------------------------------------------------------- scoring windows


def score_windows(runner: Any, windows: TextWindows, reference: list[WindowSummary] | None = None, *,
                  cancel: Any = None, on_window: Callable[[int, int], None] | None = None
                  ) -> tuple[list[WindowSummary], list[np.ndarray]]:
    """Each window's summary and, against ``reference``, log p of the reference's top-k tokens (for KL).

    The one place windows become summaries (the run's evaluator and the sensitivity probes share it):
    a few windows per forward pass, as many as fit the logits budget, each reduced at once."""
    n = windows.count
    summaries: list[WindowSummary] = []
    logps: list[np.ndarray] = []
    batch, done = 1, 0
    while done < n:
        if cancel is not None:
            cancel.raise_if_cancelled()
        ids, scored = windows.ids[done:done + batch], windows.scored[done:done + batch]
        logits = runner.logits(ids)
        check_logits(logits, ids, runner, int(windows.ids.max()))
        for j in range(len(ids)):
            summaries.append(summarize_window(logits[j], ids[j], scored[j]))
            if reference is not None:
                logps.append(log_probs_of(logits[j], scored[j], reference[done + j].top_ids))
        done += len(ids)
        if batch == 1:  # the vocabulary is known now: as many windows per pass as fit the logits budget
            fit = int(LOGITS_BYTES // max(logits.shape[1] * logits.shape[2] * 4, 1))
            batch = max(1, min(MAX_BATCH, fit))
        del logits
        if on_window is not None:
            on_window(done, n)
    return summaries, logps


def check_logits(logits: np.ndarray, ids: np.ndarray, runner: Any, top_id: int) -> None:
    """A clear error when the model's output is not next-token logits over the text's vocabulary."""
    if logits.ndim != 3 or logits.shape[:2] != ids.shape:
        raise DataError(f"logits of shape {list(logits.shape)} for windows {list(ids.shape)}",
                        subject=runner.engine, hint="the model must return [batch, sequence, vocabulary] logits")
    vocab = logits.shape[-1]
    if vocab <= top_id:
        raise DataError(f"the model scores {vocab} tokens but the text holds token id {top_id}",
                        subject=runner.engine, hint="use the tokenizer that belongs to this model")


# --------------------------------------------------------------------------- the measurement


@dataclass
class LMEvaluator:
    """Measures every model of a run on the same windows and prompts; the first one measured is the original."""

    data: LMData
    settings: LMSettings
    threads: int = 0
    device: str = "cpu"
    progress: Progress | None = field(default=None, repr=False)
    reference: list[WindowSummary] | None = field(default=None, repr=False)
    reference_tokens: list[list[int]] | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list, repr=False)  # said while measuring the current model

    def _say(self, fraction: float, message: str) -> None:
        if self.progress is not None:
            self.progress(fraction, message)

    def measure(self, handle: ModelHandle, cancel: Any = None, *, reuse: LMReport | None = None) -> LMReport:
        """The model's LMReport; with ``reuse`` (a cached report of the same model) only generation is re-run."""
        from slimline.core.lm.memory import PeakRSS
        from slimline.core.lm.runners import open_runner
        from slimline.core.runtime import resolve_threads

        threads = resolve_threads(self.threads)
        is_original = self.reference is None
        self.notes = []
        t0, c0 = time.perf_counter(), time.process_time()
        with PeakRSS() as mem:
            runner = open_runner(handle, threads=threads, device=self.device, eos=self.data.eos,
                                 pad_id=self.data.pad_id)
            try:
                if reuse is not None and not is_original:
                    report = reuse.model_copy(update={"notes": [*[n for n in reuse.notes if n != REUSED], REUSED]})
                else:
                    report = self._score(runner, cancel)
                gen = self._generate(runner, cancel)
            finally:
                runner.close()
        notes = list(report.notes) + [n for n in [*getattr(runner, "notes", []), *self.notes] if n not in report.notes]
        return report.model_copy(update={"generation": gen, "peak_rss_bytes": mem.peak,
                                         "rss_before_bytes": mem.before, "memory_method": mem.method,
                                         "notes": notes, "measure_s": time.perf_counter() - t0,
                                         "cpu_s": time.process_time() - c0})

    # --- perplexity ------------------------------------------------------------------
    def _score(self, runner: Any, cancel: Any) -> LMReport:
        w = self.data.windows
        n = w.count
        t0 = time.perf_counter()

        def said(done: int, total: int) -> None:
            rate = done / max(time.perf_counter() - t0, 1e-9)
            self._say(0.7 * done / total, f"perplexity: window {done}/{total}, {rate:.2f} windows/s, "
                                          f"ETA {(total - done) / max(rate, 1e-9):.0f} s")

        summaries, logps = score_windows(runner, w, self.reference, cancel=cancel, on_window=said)
        eval_s = time.perf_counter() - t0
        ppl = perplexity(summaries)
        vs = None
        if self.reference is None:
            self.reference = summaries
        else:
            c = compare(self.reference, summaries, logps)
            vs = VsOriginal(increase=c.increase, increase_low=c.increase_low, increase_high=c.increase_high,
                            agreement=c.agreement, kl_topk=c.kl_topk, top_k=c.top_k,
                            original_perplexity=c.original.value)
        return LMReport(dataset=w.describe(), source=w.source, sha256=w.sha256, tokens=ppl.tokens, windows=n,
                        window_length=w.length, perplexity=ppl, vs_original=vs, engine=runner.engine,
                        threads=runner.threads, eval_s=eval_s)

    # --- generation ------------------------------------------------------------------
    def _generate(self, runner: Any, cancel: Any) -> GenerationReport:
        from slimline.core.metrics import CpuWatch, machine_noise, usable_cores

        prompts, ids = self.data.prompts, self.data.prompt_ids
        max_new = self.settings.max_new_tokens
        runner.generate(ids[0], min(WARMUP_TOKENS, max_new))
        samples: list[GenerationSample] = []
        gens: list[Any] = []
        t0 = time.perf_counter()
        with CpuWatch() as watch:
            self._generate_all(runner, cancel, samples, gens, t0)
        cond, cores = watch.cond, usable_cores()
        noise = machine_noise(load_before=cond.load_before, load_after=cond.load_after,
                              others_busy_cores=cond.others_busy_cores, cores=cores, threads=runner.threads)
        if self.reference_tokens is None:
            self.reference_tokens = [s.tokens for s in samples]
        timed = [g for g in gens if g.tokens] or gens  # a prompt longer than a fixed-length ONNX gives no tokens
        pre = np.array([g.prefill_ms for g in timed])
        dec = np.array([g.decode_tokens_per_s for g in timed])
        return GenerationReport(engine=gens[0].engine, kv_cache=bool(runner.kv_cache), threads=gens[0].threads,
                                max_new_tokens=max_new, prompts_source=prompts.source, samples=samples,
                                prefill_ms=float(np.median(pre)), prefill_ms_min=float(pre.min()),
                                prefill_ms_max=float(pre.max()), decode_tokens_per_s=float(np.median(dec)),
                                decode_tokens_per_s_min=float(dec.min()), decode_tokens_per_s_max=float(dec.max()),
                                load_avg=cond.load_before, others_busy_cores=cond.others_busy_cores, cores=cores,
                                noise=noise)

    def _generate_all(self, runner: Any, cancel: Any, samples: list[GenerationSample], gens: list[Any],
                      t0: float) -> None:
        prompts, ids = self.data.prompts, self.data.prompt_ids
        max_new = self.settings.max_new_tokens
        for k, (text, pids) in enumerate(zip(prompts.texts, ids)):
            if cancel is not None:
                cancel.raise_if_cancelled()
            g = runner.generate(pids, max_new)
            gens.append(g)
            if not g.tokens:
                self.notes.append(f"prompt {k + 1} ({len(pids)} tokens) got no continuation: {g.engine}"
                                  + (f" takes at most {runner.max_len} tokens" if getattr(runner, "max_len", None)
                                     else ""))
            ref = self.reference_tokens[k] if self.reference_tokens is not None else None
            div = first_divergence(ref, g.tokens) if ref is not None else None
            decode = self.data.tokenizer.decode
            samples.append(GenerationSample(
                prompt=text, prompt_tokens=g.prompt_tokens, tokens=g.tokens,
                text=decode(g.tokens, skip_special_tokens=True), first_divergence=div,
                common_text=decode(g.tokens[:div], skip_special_tokens=True) if div is not None else None,
                prefill_ms=g.prefill_ms, decode_tokens_per_s=g.decode_tokens_per_s))
            dt = time.perf_counter() - t0
            left = len(ids) - k - 1
            self._say(0.7 + 0.3 * (k + 1) / len(ids), f"generating: prompt {k + 1}/{len(ids)}, "
                                                       f"{g.decode_tokens_per_s:.1f} tok/s, "
                                                       f"ETA {dt / (k + 1) * left:.0f} s")


def first_divergence(reference: list[int], got: list[int]) -> int | None:
    """Index of the first token where ``got`` leaves ``reference`` (a shorter one ends there); None if equal."""
    for i, (a, b) in enumerate(zip(reference, got)):
        if a != b:
            return i
    return None if len(reference) == len(got) else min(len(reference), len(got))


# --------------------------------------------------------------------------- judging a step


SLOWER_MARGIN = 0.05  # decode tok/s ranges over prompts must be apart by more than this to call a step slower


def lm_flags(step: LMReport, before: LMReport | None, budgets: Budgets) -> tuple[list[str], list[str]]:
    """(flags, reasons) of an LM step: over budget (perplexity by its interval, agreement, KL), slower decode."""
    flags: list[str] = []
    reasons: list[str] = []
    vs = step.vs_original
    where = f"on {step.dataset}"
    if vs is not None:
        fails = []
        b = budgets.token_max_perplexity_increase
        if vs.increase_low > b:
            fails.append(f"perplexity {vs.increase * 100:+.2f} % (95 % interval {vs.increase_low * 100:+.2f} … "
                         f"{vs.increase_high * 100:+.2f} %) vs the original's {vs.original_perplexity:.3f}: the whole "
                         f"interval is above the budget +{b * 100:g} %")
        if vs.agreement < budgets.token_min_agreement:
            fails.append(f"next-token agreement {vs.agreement:.4f} < budget {budgets.token_min_agreement}")
        if vs.kl_topk > budgets.token_max_kl:
            fails.append(f"KL ≥ {vs.kl_topk:.4f} nats/token (a lower bound, top-{vs.top_k}) > budget "
                         f"{budgets.token_max_kl}")
        if fails:
            flags.append("over_budget")
            reasons.append("language model: " + "; ".join(fails) + f" ({where}, n={step.tokens} tokens)")
    g, g0 = step.generation, before.generation if before is not None else None
    if g is not None and g.noise:
        flags.append("noisy")
        reasons.append(f"decode speed is noisy, no slower/faster conclusion ({'; '.join(g.noise)})")
    if g is not None and g0 is not None and not g.noise and not g0.noise:
        if g.kv_cache != g0.kv_cache:
            reasons.append(f"decode speed not comparable with the step's input: {g.engine} vs {g0.engine}")
        elif g.decode_tokens_per_s_max < g0.decode_tokens_per_s_min * (1 - SLOWER_MARGIN):
            flags.append("slower")
            reasons.append(f"slower decode: {g.decode_tokens_per_s:.1f} tok/s ({g.decode_tokens_per_s_min:.1f}–"
                           f"{g.decode_tokens_per_s_max:.1f}) vs {g0.decode_tokens_per_s:.1f} tok/s "
                           f"({g0.decode_tokens_per_s_min:.1f}–{g0.decode_tokens_per_s_max:.1f}) for the step's input "
                           f"over {len(g.samples)} prompts, {g.threads} threads; the ranges do not overlap")
    return flags, reasons


__all__ = ["LMData", "LMEvaluator", "causal_lm_guess", "check_logits", "eos_ids", "first_divergence", "lm_flags",
           "lm_text_task", "prepare", "score_windows", "text_bundle", "tokenizer_folder", "windows_dataset"]
