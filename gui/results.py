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

from slimline.core.export.variants import Variant
from slimline.core.metrics import LatencyReport
from slimline.core.results import Measurement, RunRecord

__all__ = ["Quality", "fmt_ms", "latency_batches", "latency_ms", "latency_report", "load_history", "model_key",
           "pareto_front", "quality", "run_model", "size_bytes", "variant_label"]


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


def latency_ms(result: Measurement | None, percentile: str = "p50") -> float | None:
    """p50 or p90 (ms) at the smallest batch measured; None when the model was not timed."""
    rep = latency_report(result)
    if rep is None:
        return None
    return rep.p90_ms if percentile == "p90" else rep.p50_ms


@dataclass
class Quality:
    """What the y axis shows: top-1 on a named dataset, or fidelity when there are no labels."""

    value: float | None
    label: str          # e.g. "top-1 on digits_eval (n=449)" or "mean cosine vs original (n=64, random inputs)"
    kind: str           # accuracy | fidelity | none


def quality(result: Measurement | None) -> Quality:
    acc = result.accuracy if result is not None else None
    if acc is not None:
        return Quality(float(acc.top1), f"top-1 on {acc.dataset} (n={acc.n})", "accuracy")
    fid = result.fidelity if result is not None else None
    if fid is not None:
        return Quality(float(fid.mean_cosine), f"mean output cosine vs original (n={fid.n})", "fidelity")
    return Quality(None, "no accuracy (no evaluation data)", "none")


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
    return model_key(path), (Path(path).name if path else "")


def load_history(workspace: str | Path) -> list[RunRecord]:
    from slimline.core.history import list_runs

    return list_runs(Path(workspace))


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated when x is minimised and y maximised."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def fmt_ms(v: float | None) -> str:
    return "—" if v is None else (f"{v:.3f} ms" if v < 10 else f"{v:.1f} ms")
