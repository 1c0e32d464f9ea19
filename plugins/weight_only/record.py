"""What the weight-only step did, as typed data: which layer got which bits, the search, the check.

Written beside the output model (``weight_only.json``) and flattened into the step's tables, so
the run record, the report and a later reader see the same figures.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from slimline.core.lm.score import LMComparison

LayerKind = Literal["linear", "lm_head", "embedding"]


class LayerBits(BaseModel):
    """One weight matrix and how it is stored in the output."""

    model_config = ConfigDict(frozen=True)

    name: str                       # MatMul / Gather node of the input model
    kind: LayerKind
    decoder_block: int | None
    shape: tuple[int, int]          # [K, N] of a MatMul; [vocab, hidden] of the embedding
    bits: int | None                # None: left in float
    accuracy_level: int | None = None  # MatMulNBits accuracy_level (0 = float activations, 4 = int8)
    algorithm: str                  # "" when left in float
    block_size: int | None
    sensitivity: float | None       # relative output error at the low bit width (calibration windows)
    bytes: int                      # stored bytes (packed weights + scales + zero points, or float)
    why: str = ""                   # why not the default (excluded, shared with the head, kept at 8 bits …)


class SearchTrial(BaseModel):
    """One mixed-precision candidate measured on the calibration windows."""

    model_config = ConfigDict(frozen=True)

    promoted_layers: int            # the most sensitive layers spared (at 8 bits, or with float activations)
    promoted_share: float           # their share of the quantized weights
    perplexity_increase: float
    agreement: float
    within_budget: bool


class Timing(BaseModel):
    """Run time of the input and the output model on the same machine and threads."""

    model_config = ConfigDict(frozen=True)

    threads: int
    prefill_tokens: int
    prefill_ms_before: float
    prefill_ms_after: float
    decode_ms_before: float | None = None   # per token (median), KV-cache models
    decode_ms_after: float | None = None
    slower: str = ""                        # what is slower beyond the timing noise, or ""


class WeightOnlyRecord(BaseModel):
    """The step's full account."""

    model_config = ConfigDict(frozen=True)

    settings: str
    lm: str                                 # the model's layout (KV cache / logits-only)
    calibration: str                        # windows used for calibration (dataset and n)
    check_windows: str                      # windows of the final check (dataset and n)
    check: LMComparison
    layers: list[LayerBits]
    search: list[SearchTrial]
    budget: float
    bytes_before: int
    bytes_after: int
    timing: Timing | None = None
    companions: list[str] = []

    def layer_rows(self) -> list[dict[str, Any]]:
        return [{**r.model_dump(), "shape": "×".join(str(d) for d in r.shape)} for r in self.layers]

    def bits_summary(self) -> str:
        """e.g. '147 layers at 4 bits, 4 at 8 bits, 0 in float'."""
        counts: dict[str, int] = {}
        for r in self.layers:
            key = f"{r.bits} bits" if r.bits else "float"
            counts[key] = counts.get(key, 0) + 1
        return ", ".join(f"{n} at {k}" if k != "float" else f"{n} in float" for k, n in sorted(counts.items()))
