"""What the views show of the engine's typed results (no Qt).

The results themselves are the engine's models (slimline.core.results: StepResult,
RunRecord) and the one Variant class (slimline.core.export.variants). This module
only decides what the window shows of them: which latency batch, what "quality"
means when there are no labels (fidelity, said so), which model a run belongs to
and which variants are Pareto-optimal, so the table, the charts and the export
dialog agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimline.core.export.variants import Variant
from slimline.core.metrics import LatencyReport
from slimline.core.results import Measurement, RunRecord

__all__ = ["NEUTRAL_FLAGS", "Quality", "decode_ms", "fmt_ms", "latency_batches", "latency_ms", "latency_report",
           "load_history", "model_key", "noise_reasons", "pareto_front", "quality", "run_model", "size_bytes",
           "speed_cells", "split_flags", "task_line", "variant_label"]


def latency_report(result: Measurement | None, batch: int | None = None) -> LatencyReport | None:
    """The latency report for ``batch`` (default: the smallest batch measured)."""
    lat = result.latency if result is not None else None
    if not lat:
        return None
    keys = sorted(lat, key=lambda k: int(k) if str(k).isdigit() else 10**9)
    if batch is not None:
        return next((lat[k] for k in keys if str(k) == str(batch)), None)
    return lat[keys[0]]


def latency_batches(result: Measurement | None) -> list[int]:
    lat = (result.latency if result is not None else None) or {}
    return sorted(int(k) for k in lat if str(k).isdigit())


def decode_ms(result: Measurement | None) -> float | None:
    """A language model's decode time per generated token (ms, median over prompts); None if not generated."""
    gen = result.lm.generation if result is not None and result.lm is not None else None
    return 1000.0 / gen.decode_tokens_per_s if gen is not None and gen.decode_tokens_per_s > 0 else None


def speed_cells(result: Measurement | None) -> tuple[str, str]:
    """(p50 cell, p90 cell); a language model shows decode tokens/s and prefill instead (units in the cell)."""
    gen = result.lm.generation if result is not None and result.lm is not None else None
    if gen is not None:
        speed = f"{gen.decode_tokens_per_s:.1f} tok/s" + ("" if gen.kv_cache else "*")
        return speed, f"prefill {fmt_ms(gen.prefill_ms)}"
    return fmt_ms(latency_ms(result, "p50")), fmt_ms(latency_ms(result, "p90"))


def latency_ms(result: Measurement | None, percentile: str = "p50") -> float | None:
    """p50 or p90 (ms) at the smallest batch measured; None when the model was not timed."""
    rep = latency_report(result)
    if rep is None:
        return None
    return rep.p90_ms if percentile == "p90" else rep.p50_ms


@dataclass
class Quality:
    """What the y axis shows: top-1 on a named dataset, fidelity when there are no labels, or perplexity (LMs)."""

    value: float | None
    label: str          # e.g. "top-1 on digits_eval (n=449)" or "mean cosine vs original (n=64, random inputs)"
    kind: str           # accuracy | fidelity | perplexity | none
    higher_is_better: bool = True

    def text(self) -> str:
        if self.value is None:
            return "—"
        return f"{self.value:.3f}" if self.kind == "perplexity" else f"{self.value:.4f}"


def quality(result: Measurement | None) -> Quality:
    lm = getattr(result, "lm", None)
    if lm is not None:  # a language model on text: perplexity, lower is better
        name = lm.dataset.split(":")[0]
        return Quality(float(lm.perplexity.value), f"perplexity on {name} (n={lm.tokens} tokens; lower is better)",
                       "perplexity", higher_is_better=False)
    acc = result.accuracy if result is not None else None
    if acc is not None:
        return Quality(float(acc.top1), f"top-1 on {acc.dataset} (n={acc.n})", "accuracy")
    fid = result.fidelity if result is not None else None
    if fid is not None:
        return Quality(float(fid.mean_cosine), f"mean output cosine vs original (n={fid.n})", "fidelity")
    return Quality(None, "no accuracy (no evaluation data)", "none")


# Flags that say "this figure cannot support a conclusion", not "this step made things worse":
# drawn muted, never in the failure colour.
NEUTRAL_FLAGS = frozenset({"noisy"})


def split_flags(flags: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(failures, neutral notes) — a noisy timing is not a failure."""
    return [f for f in flags if f not in NEUTRAL_FLAGS], [f for f in flags if f in NEUTRAL_FLAGS]


def noise_reasons(result: Measurement | None, warnings: list[str] | None = None) -> list[str]:
    """Why the latency is noisy: the reports' own reasons, then the engine's noisy warnings."""
    out: list[str] = []
    for rep in ((result.latency or {}).values() if result is not None else []):
        for r in getattr(rep, "noise_reasons", None) or []:
            if r not in out:
                out.append(r)
    for w in warnings or []:
        if "noisy" in w and w not in out:
            out.append(w)
    return out


def task_line(results: list[Any]) -> tuple[str, str]:
    """("task: embedding (HF config …); fidelity = pooled cosine", tooltip) from the run's results; ("", "") if none."""
    lm = next((r.lm for r in results if getattr(r, "lm", None) is not None), None)
    if lm is not None:
        return (f"task: token logits (language model); perplexity on {lm.dataset}; logits by {lm.engine}",
                "A causal language model with a text file: perplexity over token windows, next-token agreement and "
                "KL (a lower bound) vs the original, greedy generations timed for decode tokens/s.")
    fid = next((r.fidelity for r in results if getattr(r, "fidelity", None) is not None
                and getattr(r.fidelity, "task", None)), None)
    if fid is None:
        return "", ""
    reason = (fid.task_reason or "").strip()
    text = f"task: {str(fid.task).replace('_', ' ')}" + (f" ({reason})" if reason else "")
    if fid.metric:
        text += f"; fidelity = {fid.metric}"
    tip = ("How the variants are judged against the original depends on what the model outputs. "
           "Wrong guess? Set the task in the Pipeline tab's Evaluation box.")
    return text, tip


def size_bytes(result: Measurement | None) -> int | None:
    return int(result.size.bytes_on_disk) if result is not None else None


def variant_label(v: Variant) -> str:
    """``step_id · title``: how lists and status lines name a variant."""
    return f"{v.step_id} · {v.title}"


def model_key(path: str | Path | None) -> str:
    """One spelling per model file, so runs from the CLI and the window group together."""
    if not path:
        return ""
    try:
        return str(Path(path).expanduser().resolve())
    except (OSError, RuntimeError):
        return str(path)


def run_model(run: RunRecord) -> tuple[str, str]:
    """(model_key, file name) of the run's input model: the record's model, else its original's."""
    model = run.model
    if model is None or not model.path:
        orig = run.step("original")
        model = orig.model if orig is not None else None
    path = model.path if model is not None else ""
    gguf = str((model.meta or {}).get("gguf_file") or "") if model is not None else ""
    if gguf:  # a GGUF runs as its dequantized folder; the user opened (and the window keys) the .gguf
        path = gguf
    return model_key(path), (Path(path).name if path else "")


def load_history(workspace: str | Path) -> list[RunRecord]:
    from slimline.core.history import list_runs

    return list_runs(Path(workspace))


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool = True) -> list[int]:
    """Indices of points not dominated when x is minimised and y maximised (minimised: ``higher_is_better=False``)."""
    if not higher_is_better:
        return pareto_front([(x, -y) for x, y in points])
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def fmt_ms(v: float | None) -> str:
    return "—" if v is None else (f"{v:.3f} ms" if v < 10 else f"{v:.1f} ms")
