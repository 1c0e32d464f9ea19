"""The HTML report's language-model sections: results table, charts, generations side by side.

Called by :mod:`slimline.core.export.report` when a run measured a language model on a text
file; the cells are the CLI's (:mod:`slimline.core.lm.render`), so both show the same figures.
Generations are shown per prompt, every step under the original, with the part from the
first token that differs from the original's continuation highlighted.
"""
from __future__ import annotations

from html import escape
from typing import Any

from slimline.core.export import svg
from slimline.core.lm import render as lr


def _h(x: Any) -> str:
    return escape(str(x), quote=True)


def _table(head: list[str], body: list[list[str]], numeric_from: int = 1) -> str:
    from slimline.core.export.report import _table as table  # the report's one table style

    return table(head, body, numeric_from=numeric_from)


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


def is_lm_run(results: list[Any]) -> bool:
    return any(getattr(r, "lm", None) is not None for r in results)


def headline_tiles(results: list[Any]) -> list[tuple[str, str, str]]:
    """(key, value, subline) tiles: perplexity change and decode speed of the last step vs the original."""
    if len(results) < 2:
        return []
    a, b = results[0].lm, results[-1].lm
    tiles = []
    if b is not None and b.vs_original is not None:
        vs = b.vs_original
        tiles.append(("perplexity vs original", lr.fmt_increase(b, interval=False),
                      f"{vs.original_perplexity:.3f} → {b.perplexity.value:.3f} (95 % CI "
                      f"{vs.increase_low * 100:+.2f}…{vs.increase_high * 100:+.2f} %)"))
        tiles.append(("next-token agreement", f"{vs.agreement:.4f}", f"KL ≥ {vs.kl_topk:.4f} nats/token"))
    ga = a.generation if a is not None else None
    gb = b.generation if b is not None else None
    if ga is not None and gb is not None and ga.decode_tokens_per_s > 0:
        noisy = bool(ga.noise or gb.noise)   # the table marks these "?"; a bare ratio here read as a result
        tiles.append(("decode tokens/s", f"{gb.decode_tokens_per_s / ga.decode_tokens_per_s:.2f}×"
                      + ("?" if noisy else ""),
                      f"{ga.decode_tokens_per_s:.1f} → {gb.decode_tokens_per_s:.1f}, {_threads(gb.threads)}"
                      + ("" if gb.kv_cache else " (no KV cache)")
                      + (" — NOISY: the machine was busy, not representative" if noisy else "")))
    return tiles


def results_section(results: list[Any]) -> str:
    head, rows = lr.lm_rows(results)
    body = []
    for r, row in zip(results, rows):
        cells = [_h(c) for c in row]
        cells[0] = f"<b>{_h(r.step_id)}</b> {_h(r.title)}" + (" <span class='tag'>cached</span>" if r.cached else "")
        cells[-1] = "".join(f"<span class='flag'>{_h(f)}</span>" for f in r.flags) or "<span class='ok'>ok</span>"
        body.append(cells)
    notes = "".join(f"<li>{_h(line)}</li>" for line in lr.lm_footer(results))
    return ("<h2>Results per step (language model)</h2>" + _table(head, body)
            + f"<ul class='muted'>{notes}</ul>")


def charts(results: list[Any]) -> list[str]:
    """Perplexity with its interval and decode tokens/s (whiskers: fastest … slowest prompt)."""
    labels = [f"{r.step_id}: {r.title}" for r in results]
    lms = [r.lm for r in results]
    ppl = [lm.perplexity.value if lm is not None else None for lm in lms]
    first = next((lm for lm in lms if lm is not None), None)
    parts = []
    if first is not None:
        parts.append(svg.hbar_chart(
            labels, [("perplexity", ppl)],
            errors=[[lr.change_interval(lm) for lm in lms]],
            title=f"Perplexity with 95 % interval of the change vs the original (paired over the same "
                  f"{first.windows} windows, {first.tokens} tokens; lower is better)",
            value_fmt=lambda v: f"{v:.3f}"))
    gens = [lm.generation if lm is not None else None for lm in lms]
    if any(gens):
        parts.append(svg.hbar_chart(
            labels, [("decode tokens/s", [g.decode_tokens_per_s if g is not None else None for g in gens])],
            errors=[[(g.decode_tokens_per_s_min, g.decode_tokens_per_s_max) if g is not None else None
                     for g in gens]],
            unit="tokens/s", title="Decode speed, median over prompts (whisker: slowest … fastest prompt)",
            value_fmt=lambda v: f"{v:.1f}"))
    return parts


def generations_section(results: list[Any]) -> str:
    """Every prompt, then each step's greedy continuation; the part after the first divergence is marked."""
    with_gen = [r for r in results if r.lm is not None and r.lm.generation is not None]
    if not with_gen:
        return ""
    g0 = with_gen[0].lm.generation
    out = [f"<h2>Generations side by side</h2><p class='muted'>{g0.max_new_tokens} greedy tokens for each of the "
           f"{_h(g0.prompts_source)}. <mark>Highlighted</mark>: from the first token that differs from the "
           "original's continuation; ↵ marks a line break.</p>"]
    for k, sample in enumerate(g0.samples):
        rows = []
        for r in with_gen:
            gen = r.lm.generation
            if k >= len(gen.samples):
                continue
            s = gen.samples[k]
            same, rest = s.split()
            where = "—" if r is with_gen[0] else ("same" if s.first_divergence is None
                                                  else f"token {s.first_divergence}")
            marked = f"<mark>{_h(lr.visible(rest))}</mark>" if rest else ""
            rows.append([f"<b>{_h(r.step_id)}</b>", f"<span class='gen'>{_h(lr.visible(same))}{marked}</span>",
                         _h(where), f"{s.decode_tokens_per_s:.1f}"])
        out.append(f"<h3>Prompt {k + 1}: <span class='gen'>{_h(sample.prompt)}</span></h3>"
                   + _table(["step", "continuation", "first divergence", "tok/s"], rows, numeric_from=2))
    return "".join(out)


def method_line(results: list[Any]) -> str:
    first = next((r.lm for r in results if r.lm is not None), None)
    if first is None:
        return ""
    g = first.generation
    gen = f" Generation: {_h(g.speed_words())}." if g is not None else ""
    return (f"<p>Language model: {_h(first.perplexity_words())}; logits by {_h(first.engine)}, "
            f"{first.threads} thread{'s' if first.threads != 1 else ''}.{gen} Peak memory: "
            f"{_h(first.memory_method or 'not measured')}.</p>")


CSS = ".gen{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:12px}mark{background:#ffe08a}"

__all__ = ["CSS", "charts", "generations_section", "headline_tiles", "is_lm_run", "method_line", "results_section"]
