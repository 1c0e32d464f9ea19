"""How a language model run reads in words and cells: the CLI table, results.md, the HTML report, the window.

One set of formatters, so the same step shows the same figures everywhere: perplexity
with the half-width of its 95 % interval, the increase vs the original with its paired
interval, next-token agreement, the top-k KL lower bound ("KL ≥"), decode tokens/s and
prefill ms (median over prompts; "*" where there is no KV cache) and the peak memory.
"""
from __future__ import annotations

from typing import Any

from slimline.core.lm.report import LMReport

LM_HEADERS = ["step", "size", "zip", "params", "perplexity", "Δ ppl (95 % CI)", "agreement", "KL ≥", "decode tok/s",
              "prefill ms", "same gen", "peak RSS", "flags"]


def _bytes(n: float | None) -> str:
    from slimline.core.render import fmt_bytes

    return fmt_bytes(n)


def fmt_perplexity(lm: LMReport | None) -> str:
    """'12.345 ±0.412' (± half the 95 % bootstrap interval)."""
    if lm is None:
        return "-"
    p = lm.perplexity
    return f"{p.value:.3f} ±{(p.high - p.low) / 2:.3f}"


def fmt_increase(lm: LMReport | None, interval: bool = True) -> str:
    """'+4.12 % (+2.03…+6.30)' vs the original; '-' for the original itself."""
    vs = lm.vs_original if lm is not None else None
    if vs is None:
        return "-"
    main = f"{vs.increase * 100:+.2f} %"
    return f"{main} ({vs.increase_low * 100:+.2f}…{vs.increase_high * 100:+.2f})" if interval else main


def change_interval(lm: LMReport | None) -> tuple[float, float] | None:
    """A step's perplexity range from the paired 95 % interval of its change vs the original (charts' whiskers).

    Why not the perplexity's own interval: the original and the step are scored on the same windows,
    so their own intervals overlap widely even when the paired change is clearly above zero; a chart
    of overlapping whiskers read as "no difference". None for the original (the baseline itself).
    """
    vs = lm.vs_original if lm is not None else None
    if vs is None:
        return None
    return vs.original_perplexity * (1 + vs.increase_low), vs.original_perplexity * (1 + vs.increase_high)


CHANGE_WHISKER = "whisker: 95 % interval of the change vs the original, paired over the same windows"


def fmt_agreement(lm: LMReport | None) -> str:
    vs = lm.vs_original if lm is not None else None
    return f"{vs.agreement:.4f}" if vs is not None else "-"


def fmt_kl(lm: LMReport | None) -> str:
    vs = lm.vs_original if lm is not None else None
    return f"{vs.kl_topk:.4f}" if vs is not None else "-"


def fmt_decode(lm: LMReport | None) -> str:
    g = lm.generation if lm is not None else None
    if g is None:
        return "-"
    return f"{g.decode_tokens_per_s:.1f}" + ("" if g.kv_cache else "*") + ("?" if g.noise else "")


def fmt_prefill(lm: LMReport | None) -> str:
    g = lm.generation if lm is not None else None
    return f"{g.prefill_ms:.1f}" if g is not None else "-"


def fmt_same(lm: LMReport | None, original: bool) -> str:
    """'3/4' prompts whose continuation equals the original's ('-' for the original)."""
    g = lm.generation if lm is not None else None
    if g is None or original:
        return "-"
    return f"{g.same_as_original}/{len(g.samples)}"


def lm_rows(results: list[Any]) -> tuple[list[str], list[list[Any]]]:
    """The CLI/markdown table of an LM run (results are StepResults; row 0 is the original)."""
    rows = []
    base = results[0] if results else None
    for r in results:
        size = r.size
        ratio = ""
        if base is not None and r is not base and base.size.bytes_on_disk:
            ratio = f" ({size.bytes_on_disk / base.size.bytes_on_disk:.2f}×)"
        from slimline.core.render import fmt_count, fmt_zip

        lm = r.lm
        rows.append([f"{r.step_id}: {r.title}" + (" [cached]" if r.cached else ""), _bytes(size.bytes_on_disk) + ratio,
                     fmt_zip(size), fmt_count(size.param_count), fmt_perplexity(lm), fmt_increase(lm),
                     fmt_agreement(lm), fmt_kl(lm), fmt_decode(lm), fmt_prefill(lm), fmt_same(lm, r is base),
                     _bytes(lm.peak_rss_bytes) if lm is not None and lm.peak_rss_bytes else "-",
                     ",".join(f.upper() if f == "noisy" else f for f in r.flags) or "ok"])
    return list(LM_HEADERS), rows


def lm_footer(results: list[Any]) -> list[str]:
    """What the LM columns mean and how they were measured (dataset, n, engines, threads, memory)."""
    first = next((r.lm for r in results if r.lm is not None), None)
    if first is None:
        return []
    lines = [f"language model: {first.perplexity_words()}; logits: {first.engine}, {_threads(first.threads)}",
             "perplexity ± half its 95 % bootstrap interval over windows; Δ ppl vs the original with a paired "
             "interval; agreement = same argmax next token; KL ≥ = KL(original ‖ step) over the original's "
             f"top-{_top_k(results)} tokens + rest, a lower bound"]
    g = first.generation
    if g is not None:
        lines.append(f"generation: {g.max_new_tokens} greedy tokens for each of the {g.prompts_source}; "
                     f"original: {g.speed_words()}; 'same gen' = continuations identical to the original's")
    for r in results[1:]:
        lm = r.lm
        if lm is None:
            continue
        if lm.engine != first.engine:
            lines.append(f"{r.step_id}: logits by {lm.engine}")
        if lm.generation is not None and lm.generation.engine != (g.engine if g else ""):
            lines.append(f"{r.step_id}: {lm.generation.speed_words()}")
        lines += [f"{r.step_id}: {n}" for n in lm.notes]
    if first.measure_s is not None and first.cpu_s is not None:
        busy = f"; {'; '.join(g.noise)}" if g is not None and g.noise else ""
        lines.append(f"measuring the original took {first.measure_s:.1f} s ({first.cpu_s:.1f} s of CPU in this "
                     f"process{busy})")
    sampled = next((r.size.zip_sampled_bytes for r in results if r.size.zip_sampled_bytes), None)
    if sampled:
        lines.append(f"≈ zip: zlib-6 size estimated from {sampled / 2**20:.0f} MiB of evenly spaced samples "
                     "(zipping a whole LLM costs about a minute of CPU)")
    if first.memory_method:
        lines.append(f"peak RSS: resident memory high-water mark of the job process while each model was loaded "
                     f"and measured ({first.memory_method})")
    if any(r.lm is not None and r.lm.generation is not None and not r.lm.generation.kv_cache for r in results):
        lines.append("* no KV cache: the whole sequence is re-run for every new token; not a deployable speed")
    if any(r.lm is not None and r.lm.generation is not None and r.lm.generation.noise for r in results):
        lines.append("? the machine was busy while generating (NOISY): tokens/s and prefill are not representative")
    return lines


def visible(text: str) -> str:
    """A continuation on one line: line breaks and tabs shown as ↵ and ⇥ (a run of newlines stays readable)."""
    return text.replace("\r\n", "\n").replace("\n", "↵").replace("\t", "⇥")


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


def _top_k(results: list[Any]) -> int:
    return next((r.lm.vs_original.top_k for r in results if r.lm is not None and r.lm.vs_original is not None), 32)


__all__ = ["CHANGE_WHISKER", "LM_HEADERS", "change_interval", "fmt_agreement", "fmt_decode", "fmt_increase", "fmt_kl",
           "fmt_perplexity", "fmt_prefill", "fmt_same", "lm_footer", "lm_rows", "visible"]
