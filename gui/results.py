"""Reading numbers out of the engine's StepResult dicts and run records (no Qt).

One place decides which latency batch is shown, what "quality" means when
there are no labels (fidelity, said so), and which variants are Pareto-optimal,
so the table, the charts and the export dialog agree.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def latency_report(result: dict[str, Any], batch: int | None = None) -> dict[str, Any] | None:
    """The latency report for ``batch`` (default: the smallest batch measured)."""
    lat = result.get("latency") or {}
    if not isinstance(lat, dict) or not lat:
        return None
    keys = sorted(lat, key=lambda k: int(k) if str(k).isdigit() else 10**9)
    if batch is not None:
        for k in keys:
            if str(k) == str(batch):
                return lat[k]
        return None
    return lat[keys[0]]


def latency_batches(result: dict[str, Any]) -> list[int]:
    lat = result.get("latency") or {}
    return sorted(int(k) for k in lat if str(k).isdigit())


@dataclass
class Quality:
    """What the y axis shows: top-1 on a named dataset, or fidelity when there are no labels."""

    value: float | None
    label: str          # e.g. "top-1 on digits_eval (n=449)" or "mean cosine vs original (n=64, random inputs)"
    kind: str           # accuracy | fidelity | none


def quality(result: dict[str, Any]) -> Quality:
    acc = result.get("accuracy")
    if acc and acc.get("top1") is not None:
        return Quality(float(acc["top1"]), f"top-1 on {acc.get('dataset', '?')} (n={acc.get('n', '?')})", "accuracy")
    fid = result.get("fidelity")
    if fid and fid.get("mean_cosine") is not None:
        return Quality(float(fid["mean_cosine"]), f"mean output cosine vs original (n={fid.get('n', '?')})", "fidelity")
    return Quality(None, "no accuracy (no evaluation data)", "none")


def size_bytes(result: dict[str, Any]) -> int | None:
    size = result.get("size") or {}
    v = size.get("bytes_on_disk")
    return int(v) if v is not None else None


@dataclass
class Variant:
    """One model produced by a run (the original is a variant too): what export acts on."""

    run_id: str
    step_id: str
    title: str
    result: dict[str, Any]
    created: str = ""
    status: str = ""
    pipeline_name: str = ""
    source_model: str = ""   # model_key() of the model the run started from (filters Results by model)

    @property
    def key(self) -> str:
        return f"{self.run_id}/{self.step_id}"

    @property
    def label(self) -> str:
        return f"{self.step_id} · {self.title}"

    @property
    def model(self) -> dict[str, Any]:
        return self.result.get("model") or {}

    @property
    def flags(self) -> list[str]:
        return list(self.result.get("flags") or [])

    @property
    def size(self) -> int | None:
        return size_bytes(self.result)

    @property
    def p50(self) -> float | None:
        rep = latency_report(self.result)
        return float(rep["p50_ms"]) if rep else None

    @property
    def p90(self) -> float | None:
        rep = latency_report(self.result)
        return float(rep["p90_ms"]) if rep else None

    @property
    def quality(self) -> Quality:
        return quality(self.result)


@dataclass
class RunRecord:
    run_id: str
    status: str
    created: str
    name: str
    variants: list[Variant] = field(default_factory=list)
    error: dict[str, Any] | None = None
    model: str = ""          # model_key() of the model the run started from
    model_name: str = ""


def model_key(path: str | Path | None) -> str:
    """One spelling per model file, so runs from the CLI and the window group together."""
    if not path:
        return ""
    try:
        return str(Path(path).expanduser().resolve())
    except (OSError, RuntimeError):
        return str(path)


def _record_model(record: dict[str, Any]) -> tuple[str, str]:
    """(key, display name) of the run's input model: the record's model, else its original's."""
    model = record.get("model") or {}
    if not model.get("path"):
        orig = next((r for r in record.get("results") or [] if r.get("step_id") == "original"), {})
        model = orig.get("model") or {}
    path = str(model.get("path") or "")
    return model_key(path), (Path(path).name if path else "")


def variants_from_record(record: dict[str, Any]) -> RunRecord:
    run_id = str(record.get("run_id", "?"))
    name = (record.get("pipeline") or {}).get("name", "")
    key, model_name = _record_model(record)
    rr = RunRecord(run_id=run_id, status=str(record.get("status", "")), created=str(record.get("created", "")),
                   name=name, error=record.get("error"), model=key, model_name=model_name)
    for res in record.get("results") or []:
        rr.variants.append(Variant(run_id=run_id, step_id=str(res.get("step_id")), title=str(res.get("title", "")),
                                   result=res, created=rr.created, status=rr.status, pipeline_name=name,
                                   source_model=key))
    return rr


def load_history(workspace: str | Path) -> list[RunRecord]:
    from slimline.core.history import list_runs

    return [variants_from_record(r) for r in list_runs(Path(workspace))]


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
