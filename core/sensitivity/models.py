"""Typed results of a sensitivity analysis: which layers hurt, by how much, and how that was measured.

Every number says what it is: ``source`` tells whether a layer was ranked by the end metric on the
user's data (the task's own metric, as the evaluation after each step uses it) or only by a cheap
score (the error at the layer's output, or the weight's own error) because it was not among the
candidates measured end to end.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT = "slimline.sensitivity"
VERSION = 1
Mode = Literal["alone", "all_but"]
Source = Literal["end_metric", "output_error", "weight_error"]


class EndMetric(BaseModel):
    """The task's metric for one variant on the evaluation rows, against the original model."""

    value: float                 # the headline metric (top-1, pooled cosine, relative L2, ...)
    loss: float                  # how much worse than the original, in the metric's units (> 0: worse)
    fidelity_loss: float         # 1 − mean output cosine vs the original: continuous, breaks ties of coarse metrics
    within_budget: bool          # the task's budget (slimline.core.tasks.budget_check / the accuracy drop)
    reason: str = ""             # why not, when not


class LevelResult(BaseModel):
    """One layer at one level."""

    level: str
    label: str
    weight_error: float | None = None    # ‖ΔW‖/‖W‖
    output_error: float | None = None    # relative error at the layer's output on the data
    alone: EndMetric | None = None       # only this layer changed
    all_but: EndMetric | None = None     # every layer changed but this one (what excluding it recovers)


class LayerSensitivity(BaseModel):
    """One row of the ranking."""

    rank: int
    layer: str            # the step's name for it (what exclusion lists and per-layer settings name)
    tensor: str           # its weight tensor (the layer table's name)
    op: str
    params: int
    score: float          # what the ranking sorts by, in the units of ``source``
    source: Source
    fidelity_score: float = 0.0   # the same cost in output fidelity (1 − cosine): breaks ties of coarse metrics
    levels: list[LevelResult] = Field(default_factory=list)

    def level(self, key: str) -> LevelResult | None:
        return next((lv for lv in self.levels if lv.level == key), None)


class SensitivitySettings(BaseModel):
    """What to analyse and how hard to look (part of the cache key)."""

    model_config = ConfigDict(extra="forbid")

    step: str                                   # plugin id
    params: dict[str, Any] = Field(default_factory=dict)
    levels: list[str] | None = None             # None: every level the step offers
    modes: list[Mode] = Field(default_factory=lambda: list[Mode](["alone"]))
    top_k: int = Field(8, ge=-1, description="layers measured end to end (-1: all, 0: cheap scores only)")
    max_rows: int = Field(256, ge=1, le=1_000_000)
    seed: int = 0
    threads: int = 0


class SensitivityResult(BaseModel):
    """``slimline sensitivity`` / the window's ranking: written to the workspace, keyed by content."""

    format: str = FORMAT
    version: int = VERSION
    model: str                         # path of the analysed model
    model_hash: str
    step: str
    step_title: str = ""
    step_input: str = ""               # the model the step saw (the converted ONNX for a torch model)
    settings: SensitivitySettings
    dataset: str = ""                  # name of the evaluation rows
    n: int = 0
    input_kind: Literal["dataset", "random"] = "dataset"
    task: str = ""
    task_reason: str = ""
    metric: str = ""                   # the headline metric, named with its data, e.g. "top-1 on eval.npz (n=449)"
    higher_is_better: bool = True
    baseline: float = 0.0              # the original's value of that metric
    default_level: str = ""            # the level the ranking's score is about
    uniform: EndMetric | None = None   # every layer at the default level (the step's uniform preset)
    rows: list[LayerSensitivity] = Field(default_factory=list)
    ranked_by: str = ""                # in words
    cheap_vs_end: float | None = None  # Spearman rank correlation of the cheap score and the end metric
    notes: list[str] = Field(default_factory=list)
    seconds: float = 0.0
    cache_key: str = ""
    cached: bool = False

    def ranked_layers(self) -> list[str]:
        return [r.layer for r in sorted(self.rows, key=lambda r: r.rank)]

    def by_tensor(self) -> dict[str, LayerSensitivity]:
        return {r.tensor: r for r in self.rows}


__all__ = ["FORMAT", "VERSION", "EndMetric", "LayerSensitivity", "LevelResult", "Mode", "SensitivityResult",
           "SensitivitySettings", "Source"]
