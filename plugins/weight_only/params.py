"""Parameters of the weight-only step, and the presets that fill what the user leaves empty.

A preset is a set of defaults, not a mode: every field left empty (None) takes the preset's
value, every field given overrides it. The resolved settings are what the step reports.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from pydantic import Field, model_validator

from slimline.core.plugin import PluginParams
from slimline.plugins.weight_only.quant import Algorithm

Preset = Literal["int4", "int4-fast", "int8"]
# block_size 0 in a preset: the first of these that divides every quantized layer's input size, else the second
AUTO_BLOCKS = (128, 64)
BlockSize = Literal[16, 32, 64, 128, 256]
# lm_head_block_size 0 in a preset: this block where it divides the head's input size, else the step's block
HEAD_AUTO_BLOCK = 128
AccuracyLevel = Literal[0, 1, 2, 4]


def auto_head_block(hidden: int, step_block: int) -> int:
    """The LM head's automatic block: HEAD_AUTO_BLOCK where it divides the head's input size, else the step's."""
    return HEAD_AUTO_BLOCK if hidden % HEAD_AUTO_BLOCK == 0 and step_block < HEAD_AUTO_BLOCK else step_block


def promoted_block(k: int, step_block: int) -> int:
    """Block of a layer kept at 8 bits in a 4-bit run: the largest of AUTO_BLOCKS (at least the step's) that divides its
    input size, else the step's. An 8-bit grid loses little to larger blocks, and every byte is read per token."""
    return next((b for b in AUTO_BLOCKS if b >= step_block and k % b == 0), step_block)


def auto_block_size(input_sizes: set[int]) -> int:
    """The larger automatic block when it divides every input size (fewer scales, no padding), else the smaller."""
    big, small = AUTO_BLOCKS
    return big if input_sizes and all(k % big == 0 for k in input_sizes) else small


@dataclass(frozen=True)
class Settings:
    """The quantizer settings in force (preset defaults with the user's choices on top)."""

    preset: str
    bits: int
    block_size: int
    symmetric: bool
    algorithm: Algorithm
    accuracy_level: int
    perplexity_budget: float
    max_promoted_share: float
    smooth_alpha: float
    head_block_size: int = 0

    def describe(self) -> str:
        sym = "symmetric" if self.symmetric else "asymmetric"
        acc = f", accuracy_level {self.accuracy_level}" if self.accuracy_level else ""
        block = f"block {self.block_size}" if self.block_size else f"block auto ({AUTO_BLOCKS[0]} where it divides " \
            f"every layer's input size, else {AUTO_BLOCKS[1]})"
        smooth = f", activations smoothed (α {self.smooth_alpha})" if self.smooth_alpha else ""
        if not self.head_block_size:
            block += f", LM head {HEAD_AUTO_BLOCK} where it divides its input size"
        elif self.head_block_size != self.block_size:
            block += f", LM head {self.head_block_size}"
        return (f"{self.bits}-bit {self.algorithm.upper()} {sym}, {block}{acc}{smooth} "
                f"(preset {self.preset})")


# Chosen on SmolLM2-135M and a float-trained model (benchmarks/bench_llm_weight_only.py):
# int4 — RTN with integer zero points (HQQ's float zero points run ~10× slower on CPU), blocks of 32,
#        int8 activations in the kernel (accuracy_level 4: half the decode time), smoothed first (on SmolLM2
#        4-bit RTN everywhere: KL to fp32 0.28 → 0.17 nats/token), and the most sensitive layers at 8 bits
#        until the perplexity budget is met, at most a quarter of the weights (within 0.2× of fp32). A 4-bit LM head
#        in blocks of 128 where 128 divides its input (every preset: lm_head_block_size 0): Gemma 3 270M's 262144 × 640
#        head takes 6.6 ms a token at blocks of 32, 4.7 ms at 128. Layers kept at 8 bits: symmetric, blocks of 128/64
#        (promoted_block). Both together: Gemma's default 3.78× → 4.95× torch decode, perplexity +15.9 → +16.9 %
#        (docs/LLM_CONTEXT_LENGTH.md).
# int8 — symmetric (no zero points), blocks of 128 where they divide every layer's input size (Gemma 3: 640, 2048),
#        else 64 (SmolLM2's 576 would pad to 640): 1.03–1.06 bytes a weight with the embedding; int8 activations
#        (the only fast 8-bit kernel on CPU: float activations with 8-bit weights decode several times slower than
#        fp32) made accurate by smoothing,
#        and the layers most hurt by int8 activations run with float activations to meet a 0.5 % budget.
# int4-fast — every layer at 4 bits, symmetric (no zero points), smoothed: decode is bound by the bytes each token
#        reads, so any layer kept at 8 bits (the LM head is a fifth of SmolLM2's weights) costs speed. On SmolLM2
#        (bench_llm_decode, paired rounds) it decodes ~15 % faster than int4 and as fast as the genai builder's
#        int4, at the builder's size, with perplexity +23.6 % vs the builder's +32.3 % (int4: +10.0 %).
PRESETS: dict[str, Settings] = {
    "int4": Settings(preset="int4", bits=4, block_size=32, symmetric=False, algorithm="rtn", accuracy_level=4,
                     perplexity_budget=0.05, max_promoted_share=0.25, smooth_alpha=0.5),
    "int4-fast": Settings(preset="int4-fast", bits=4, block_size=32, symmetric=True, algorithm="rtn",
                          accuracy_level=4, perplexity_budget=0.0, max_promoted_share=0.0, smooth_alpha=0.5),
    "int8": Settings(preset="int8", bits=8, block_size=0, symmetric=True, algorithm="rtn", accuracy_level=4,
                     perplexity_budget=0.005, max_promoted_share=0.25, smooth_alpha=0.5),
}


class WeightOnlyParams(PluginParams):
    """Weight-only block-wise quantization of an ONNX language model (MatMulNBits / GatherBlockQuantized)."""

    preset: Preset = Field("int4", description=(
        "Defaults for every field left empty. int4: 4-bit RTN, blocks of 32 (the LM head 128 where that divides its "
        "input), smoothed int8 activations, the most sensitive layers (the LM head first) kept at 8 bits (symmetric, "
        "blocks of 128 or 64) to meet a 5 % perplexity budget, at most 25 % of the weights. int4-fast: every layer "
        "at 4 bits, symmetric, smoothed — the smallest and fastest (as fast as "
        "the genai builder's int4, clearly more accurate), but less accurate than int4 (the LM head at 4 bits "
        "costs most). "
        "int8: 8-bit symmetric, blocks of 128 (64 where 128 does not divide a layer's input), int8 activations "
        "after smoothing, the layers most hurt by them run with float activations to meet a 0.5 % budget (about a "
        "quarter of fp32, embeddings included)."))
    bits: Literal[4, 8] | None = Field(None, description="Bits per weight (empty: the preset's).")
    block_size: BlockSize | None = Field(None, description=(
        "Weights sharing one scale (and zero point), along the input dimension. Smaller blocks: more accurate, "
        "bigger file (a 4-byte scale per block). Empty: the preset's."))
    lm_head_block_size: Literal[0, 16, 32, 64, 128, 256] | None = Field(None, description=(
        "Block of the LM head (and of a tied embedding, which reads its weight). Decoding reads the whole head for "
        "every token, and its scales are a fifth of a 4-bit head at blocks of 32: on Gemma 3 270M (a 262144 × 640 "
        "head, 63 % of the weights) blocks of 128 decode ~20 % faster. 0: 128 where it divides the head's input "
        "size, else block_size. Empty: block_size when you set it, else the preset's (0)."))
    symmetric: bool | None = Field(None, description=(
        "Symmetric: no zero points (smaller, a little less accurate at 4 bits). Applies to RTN and GPTQ; HQQ and "
        "k-quant always store zero points. Empty: the preset's."))
    algorithm: Algorithm | None = Field(None, description=(
        "rtn: round to nearest (onnxruntime's MatMulNBits default, what the genai builder uses). hqq: half-quadratic "
        "fit with float zero points (4 bits only; onnxruntime's CPU kernel runs it far slower). gptq: error-"
        "compensating, uses the calibration windows (4 bits only, slow). k_quant: llama.cpp-style scale search. "
        "Empty: the preset's."))
    accuracy_level: AccuracyLevel | None = Field(None, description=(
        "How MatMulNBits computes: 0 = unset (float activations), 1 = fp32, 2 = fp16, 4 = activations quantized to "
        "int8 (fastest on CPU; can change the argmax). The step measures its effect. Empty: the preset's."))
    quantize_embeddings: bool = Field(True, description=(
        "Quantize the token embedding too (GatherBlockQuantized). A tied embedding reads the LM head's quantized "
        "weight, so the shared matrix is stored once."))
    quantize_lm_head: bool = Field(True, description="Quantize the LM head (the layer that makes the logits).")
    perplexity_budget: float | None = Field(None, ge=0.0, le=10.0, description=(
        "Mixed precision: spare the most sensitive layers (4 bits: keep them at 8 bits; 8 bits with "
        "accuracy_level 4: run them with float activations) until the perplexity increase on the calibration "
        "windows is at most this (0.05 = +5 %). 0 = no search. Empty: the preset's."))
    max_promoted_share: float | None = Field(None, ge=0.0, le=1.0, description=(
        "Mixed precision: largest share of the quantized weights the search may spare — kept at 8 bits in a "
        "4-bit run (a size cap), run with float activations (accuracy_level 0) in an 8-bit run with int8 "
        "activations (a speed cap: that path is slower on CPU). Empty: the preset's."))
    smooth_alpha: float | None = Field(None, ge=0.0, le=1.0, description=(
        "Activation smoothing (SmoothQuant) strength α: divides outlier input channels by max|x|^α / "
        "max|W|^(1-α) and moves the factor into the weights, exact in float; it lets int8 activations "
        "(accuracy_level 4) keep 8-bit accuracy. 0 = off. Empty: the preset's."))
    max_perplexity_increase: float = Field(0.5, gt=0.0, le=100.0, description=(
        "Refuse the result when its perplexity on the check windows rises more than this (0.5 = +50 %) or is "
        "not a number: a broken LM is never passed on."))
    text_file: str = Field("", description=(
        "Plain text for calibration and the check (windows of `window_length` tokens). Empty: the pipeline's "
        "data file when it is text; without text the model's own samples are used (a self-consistency check, "
        "labelled as such)."))
    window_length: int = Field(128, ge=8, le=8192, description="Tokens per window (a fixed-length export sets it).")
    calibration_windows: int = Field(8, ge=1, le=512, description=(
        "Windows for sensitivity, GPTQ and the mixed-precision search."))
    check_windows: int = Field(8, ge=1, le=512, description=(
        "Further windows (not used for calibration) on which the result is checked against the input model."))
    nodes_to_exclude: tuple[str, ...] = Field((), description=(
        "MatMul node names or glob patterns to leave in float (as in the input model)."))
    layer_bits: dict[str, Literal[0, 4, 8]] = Field(default_factory=dict, description=(
        "Per-layer bits, as the budgeted search (`slimline search`) writes them: MatMul node name or glob → 8, 4 or "
        "0 (float; its input is smoothed with the rest, exact in float). Layers not named take `bits`; a tied "
        "embedding follows the LM head. When set, the mixed-precision search (perplexity_budget) is off."))
    layerwise_groups: Literal["auto", "layer", "block"] = Field("auto", description=(
        "How sensitivity analysis and the budgeted search see the model (the step's own run ignores it): each "
        "MatMul on its own, or the MatMuls of one decoder block together (the LM head apart). auto: per layer up "
        "to 48 MatMuls, per block beyond (a 30-block LM has 210)."))
    timing_runs: int = Field(3, ge=0, le=100, description=(
        "Timed prefills (and 16 decode steps for KV-cache models) before/after; 0 skips timing."))

    @model_validator(mode="after")
    def _consistent(self) -> WeightOnlyParams:
        s = self.resolved()
        if s.algorithm == "gptq" and s.bits != 4:
            raise ValueError("algorithm 'gptq': onnxruntime's GPTQ writes 4-bit weights only (set bits to 4)")
        if s.algorithm == "hqq" and s.bits != 4:
            raise ValueError("algorithm 'hqq': onnxruntime's CPU kernel has no 8-bit weights with float zero "
                             "points (set bits to 4, or use rtn)")
        return self

    def resolved(self) -> Settings:
        base = PRESETS[self.preset]
        return replace(
            base,
            bits=base.bits if self.bits is None else self.bits,
            block_size=base.block_size if self.block_size is None else self.block_size,
            symmetric=base.symmetric if self.symmetric is None else self.symmetric,
            algorithm=base.algorithm if self.algorithm is None else self.algorithm,
            accuracy_level=base.accuracy_level if self.accuracy_level is None else self.accuracy_level,
            perplexity_budget=base.perplexity_budget if self.perplexity_budget is None else self.perplexity_budget,
            max_promoted_share=base.max_promoted_share if self.max_promoted_share is None
            else self.max_promoted_share,
            smooth_alpha=base.smooth_alpha if self.smooth_alpha is None else self.smooth_alpha,
            head_block_size=self.lm_head_block_size if self.lm_head_block_size is not None
            else self.block_size if self.block_size is not None else base.head_block_size)
