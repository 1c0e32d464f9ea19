"""Typed settings and results of the budgeted search (``slimline search``, the window's Search button)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from slimline.core.sensitivity.models import EndMetric, SensitivityResult

FORMAT = "slimline.search"
VERSION = 1
SEARCH_FILE = "search.json"   # beside run.json in the search's run folder
Objective = Literal["size", "compressed", "latency"]
CandidateKind = Literal["path", "refine", "uniform"]


class SearchSettings(BaseModel):
    """What to search and how much to spend (the budget itself is the evaluation's ``budgets``)."""

    model_config = ConfigDict(extra="forbid")

    step: str
    params: dict[str, Any] = Field(default_factory=dict)
    objective: Objective | None = None      # None: the step's natural one (compressed size for zeros)
    levels: list[str] | None = None         # None: every level the step offers
    max_candidates: int = Field(14, ge=2, le=200, description="end-to-end evaluations, uniform presets included")
    top_k: int = Field(8, ge=-1, description="layers the sensitivity analysis measures end to end")
    sensitivity_rows: int = Field(256, ge=1, le=1_000_000)
    budget: float | None = Field(None, description=(
        "The task's headline budget, set once the task is known (slimline.core.search.verdict.BUDGET_FIELDS): "
        "perplexity increase for a language model (0.05 = +5 %), top-1 drop with labels, pooled cosine for "
        "embeddings, ...; None: the evaluation's budgets as they are"))
    latency_batch: int = Field(1, ge=1, le=65536)
    latency_runs: int = Field(20, ge=3, le=10_000)
    threads: int = 0
    seed: int = 0


class Candidate(BaseModel):
    """One variant the search built and verified end to end (a step of the search's run record)."""

    index: int
    step_id: str                      # its row in the run record ("c01")
    kind: CandidateKind
    label: str                        # e.g. "path 5/12: 4 layers at INT8", "uniform 50% zeros"
    settings: dict[str, str]          # layer -> level (layers not named are left as they are)
    params: dict[str, Any]            # the step's parameters that make exactly this model
    bytes_on_disk: int = 0
    zip_bytes: int | None = None
    latency_p50_ms: float | None = None
    objective: float                  # the objective's figure (bytes, or ms)
    metric: EndMetric                 # the task's metric vs the original
    within_budget: bool
    reason: str = ""                  # why over budget
    chosen: bool = False


class SearchResult(BaseModel):
    """``runs/<run_id>/search.json``: the ranking it started from, every candidate, and the verdict."""

    format: str = FORMAT
    version: int = VERSION
    run_id: str = ""
    model: str = ""
    step: str = ""
    step_title: str = ""
    objective: Objective = "size"
    objective_unit: str = "bytes"
    budget: str = ""                  # in words, e.g. "top-1 drop ≤ 1.00 points on digits_eval.npz (n=449)"
    metric: str = ""
    baseline: float = 0.0
    higher_is_better: bool = True
    settings: SearchSettings
    sensitivity: SensitivityResult | None = None
    candidates: list[Candidate] = Field(default_factory=list)
    chosen: int | None = None         # index of the chosen candidate
    best_uniform: int | None = None   # the most compact uniform preset within the budget
    reachable: bool = False
    verdict: str = ""
    seconds: float = 0.0
    notes: list[str] = Field(default_factory=list)

    def candidate(self, index: int | None) -> Candidate | None:
        return next((c for c in self.candidates if c.index == index), None) if index is not None else None


__all__ = ["FORMAT", "SEARCH_FILE", "VERSION", "Candidate", "CandidateKind", "Objective", "SearchResult",
           "SearchSettings"]
