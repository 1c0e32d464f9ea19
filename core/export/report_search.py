"""The report's sections for a budgeted search run: the sensitivity ranking it started from and its path.

``slimline report`` of a search run (a run folder holding ``search.json`` beside ``run.json``) shows the
verdict, the budget, the ranking (with which score each layer was ranked by) and every candidate in the
order the search evaluated it, the chosen one and the best uniform preset marked. Inline SVG, no script.
"""
from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from slimline.core.export import svg
from slimline.core.render import fmt_bytes

TOP_ROWS = 40


def load_search(run_dir: str | Path) -> Any:
    """The run's SearchResult, or None (not a search run, or an unreadable file)."""
    from slimline.core.search.models import SEARCH_FILE, SearchResult

    p = Path(run_dir) / SEARCH_FILE
    if not p.is_file():
        return None
    try:
        return SearchResult.model_validate(json.loads(p.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def _h(x: Any) -> str:
    return escape("" if x is None else str(x))


def _n(v: float | None, spec: str = ".4g") -> str:
    return "–" if v is None else format(v, spec)


def _table(head: list[str], body: list[list[str]]) -> str:
    th = "".join(f"<th>{_h(c)}</th>" for c in head)
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{rows}</tbody></table>"


def sensitivity_section(sens: Any) -> str:
    """The ranking as a chart and a table (what `slimline sensitivity` prints)."""
    rows = sorted(sens.rows, key=lambda r: r.rank)[:TOP_ROWS]
    head = sens.default_level
    chart = svg.hbar_chart([f"{r.rank}. {r.layer}" for r in rows],
                           [("end metric", [r.score if r.source == "end_metric" else None for r in rows]),
                            ("cheap score", [r.score if r.source != "end_metric" else None for r in rows])],
                           title=f"Sensitivity at level {head}", unit="")
    body = []
    for r in rows:
        lv = r.level(head)
        body.append([str(r.rank), f"<code>{_h(r.layer)}</code>", f"<code>{_h(r.tensor)}</code>", _h(r.op),
                     f"{r.params:,}", _n(r.score), _n(r.fidelity_score, ".3g"), _h(r.source.replace("_", " ")),
                     _n(lv.weight_error if lv else None), _n(lv.output_error if lv else None),
                     _n(lv.alone.value if lv and lv.alone else None),
                     _n(lv.all_but.value if lv and lv.all_but else None)])
    corr = (f"; cheap score vs end metric on the measured layers: Spearman {sens.cheap_vs_end:+.2f}"
            if sens.cheap_vs_end is not None else "")
    uniform = (f"; every layer at {head}: {sens.uniform.value:.4f}" if sens.uniform is not None else "")
    return (f"<h2>Sensitivity ranking: {_h(sens.step_title or sens.step)}</h2>"
            f"<p class='muted'>{_h(sens.metric)}; original {sens.baseline:.4f}{_h(uniform)}. Ranked by "
            f"{_h(sens.ranked_by)}{_h(corr)}. Task {_h(sens.task)} ({_h(sens.task_reason)}).</p>"
            f"<figure>{chart}</figure>"
            + _table(["#", "layer", "tensor", "op", "params", "score", "Δ fidelity", "source", "weight err",
                      "output err", "alone", "all but"], body)
            + "".join(f"<p class='muted'>{_h(n)}</p>" for n in sens.notes))


def search_section(result: Any) -> str:
    """The verdict, the path of candidates (chosen ★, best uniform u) and the ranking it started from."""
    cands = result.candidates
    unit = "ms" if result.objective == "latency" else "MB"
    scale = 1.0 if result.objective == "latency" else 1e6
    chart = svg.hbar_chart([f"{'★ ' if c.chosen else ''}{c.index}. {c.label[:48]}" for c in cands],
                           [("within budget", [c.objective / scale if c.within_budget else None for c in cands]),
                            ("over budget", [c.objective / scale if not c.within_budget else None for c in cands])],
                           title=f"Search path: {result.objective} of each candidate", unit=unit)
    body = []
    for c in cands:
        mark = "★ chosen" if c.chosen else ("best uniform" if c.index == result.best_uniform else "")
        body.append([str(c.index), _h(c.kind), _h(c.label), fmt_bytes(c.bytes_on_disk), fmt_bytes(c.zip_bytes),
                     _n(c.latency_p50_ms, ".3f"), f"{c.metric.value:.4f}",
                     "<span class='ok'>yes</span>" if c.within_budget else f"<span class='flag'>no</span> "
                     f"{_h(c.reason)}", _h(mark)])
    cls = "ok" if result.reachable else "flag"
    out = (f"<h2>Budgeted search</h2><p><span class='{cls}'><b>{_h(result.verdict)}</b></span></p>"
           f"<p class='muted'>Step {_h(result.step_title or result.step)}; objective {_h(result.objective)}; budget "
           f"{_h(result.budget)}; metric {_h(result.metric)} (original {result.baseline:.4f}); "
           f"{len(cands)} candidates verified end to end in {result.seconds:.0f} s.</p>"
           f"<figure>{chart}</figure>"
           + _table(["#", "kind", "candidate", "size", "zip", "p50 ms", "metric", "within budget", ""], body)
           + "".join(f"<p class='muted'>{_h(n)}</p>" for n in result.notes))
    if result.sensitivity is not None:
        out += sensitivity_section(result.sensitivity)
    return out


__all__ = ["load_search", "search_section", "sensitivity_section"]
