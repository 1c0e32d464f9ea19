"""What a language model's measurement records: perplexity, vs-original scores, generations, speed, memory.

Typed and small (a few kB per step, however big the vocabulary) because it lives in
``run.json`` on every :class:`slimline.core.results.Measurement` of an LM run (field
``lm``); the CLI table, the HTML report and the window all read these fields, so they
show the same figures under the same names. Only pydantic and the perplexity model are
imported: the GUI loads this with every run record.
"""
from __future__ import annotations

from pydantic import BaseModel, Field

from slimline.core.lm.score import Perplexity


class VsOriginal(BaseModel):
    """A step's scores against the original's on the same windows (never computed for the original)."""

    increase: float                 # perplexity / original - 1
    increase_low: float             # 95 % paired bootstrap interval over windows
    increase_high: float
    agreement: float                # share of scored positions with the same argmax next token
    kl_topk: float                  # KL(original ‖ step), nats/token, over the original's top-k + rest:
    top_k: int                      # a LOWER BOUND of the full KL (shown as "KL ≥")
    original_perplexity: float


class GenerationSample(BaseModel):
    """One prompt's greedy continuation, and where it first leaves the original's."""

    prompt: str
    prompt_tokens: int
    tokens: list[int]
    text: str                       # the continuation decoded with the model's tokenizer
    first_divergence: int | None = None   # index of the first token that differs from the original's;
    #                                       None: identical (or this is the original)
    common_text: str | None = None        # the tokens before the first divergence, decoded
    prefill_ms: float
    decode_tokens_per_s: float

    def split(self) -> tuple[str, str]:
        """(the part shared with the original, the part from the first differing token on)."""
        if self.first_divergence is None or self.common_text is None:
            return self.text, ""
        if self.text.startswith(self.common_text):
            return self.common_text, self.text[len(self.common_text):]
        return "", self.text


class GenerationReport(BaseModel):
    """Greedy continuations of every prompt, with prefill/decode timing (median and range over prompts)."""

    engine: str                     # "torch 2.13 generate (KV cache)", "onnxruntime-genai 0.18 (KV cache)", ...
    kv_cache: bool                  # False: the whole sequence is re-run per token (not a deployable speed)
    threads: int
    max_new_tokens: int
    prompts_source: str             # "prompts.txt (4 prompts)" / "first 4 sentences of eval.txt"
    samples: list[GenerationSample] = Field(default_factory=list)
    prefill_ms: float               # median over prompts
    prefill_ms_min: float
    prefill_ms_max: float
    decode_tokens_per_s: float      # median over prompts: new tokens / seconds after the prompt pass
    decode_tokens_per_s_min: float
    decode_tokens_per_s_max: float
    # what the machine was doing meanwhile (slimline.core.metrics.CpuWatch); non-empty noise: not representative
    load_avg: float | None = None
    others_busy_cores: float | None = None
    cores: int | None = None
    noise: list[str] = Field(default_factory=list)

    @property
    def same_as_original(self) -> int:
        return sum(1 for s in self.samples if s.first_divergence is None)

    def speed_words(self) -> str:
        """'decode 16.2 tok/s (15.8–16.9), prefill 41 ms; torch … 2 threads' for footers and tooltips."""
        cache = "" if self.kv_cache else " — no KV cache: the whole sequence re-run per token, not a deployable speed"
        if self.noise:
            cache += f" — NOISY: {'; '.join(self.noise)}"
        return (f"decode {self.decode_tokens_per_s:.1f} tok/s ({self.decode_tokens_per_s_min:.1f}–"
                f"{self.decode_tokens_per_s_max:.1f}), prefill {_ms(self.prefill_ms)} "
                f"({self.prefill_ms_min:.1f}–{self.prefill_ms_max:.1f}), median over {len(self.samples)} prompts; "
                f"{self.engine}, {self.threads} thread{'s' if self.threads != 1 else ''}{cache}")


def _ms(v: float) -> str:
    return f"{v:.1f} ms" if v < 10 else f"{v:.0f} ms"


class LMReport(BaseModel):
    """One model's language-model measurement on the run's text windows."""

    dataset: str                    # TextWindows.describe(): file, windows × length, tokens scored
    source: str                     # the text file
    sha256: str
    tokens: int                     # scored tokens
    windows: int
    window_length: int
    perplexity: Perplexity
    vs_original: VsOriginal | None = None
    engine: str                     # what computed the logits (torch / onnxruntime + form of the model)
    threads: int
    eval_s: float                   # seconds of the perplexity pass
    measure_s: float | None = None  # seconds of the whole measurement (load, perplexity, generations)
    cpu_s: float | None = None      # CPU seconds this process spent on it (all threads; spin-waits included)
    generation: GenerationReport | None = None
    peak_rss_bytes: int | None = None     # resident-set high-water mark of the job process during the measurement
    rss_before_bytes: int | None = None   # resident set just before the model was loaded
    memory_method: str = ""
    notes: list[str] = Field(default_factory=list)

    def perplexity_words(self) -> str:
        p = self.perplexity
        return f"perplexity {p.value:.3f} (95 % interval {p.low:.3f}–{p.high:.3f}) on {self.dataset}"


__all__ = ["GenerationReport", "GenerationSample", "LMReport", "VsOriginal"]
