"""Tiny inline-SVG charts for the HTML report (no JS, no network, no plotting library).

Each function returns an ``<svg>`` string sized in CSS pixels; text is escaped.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

PALETTE = ["#3b6fb6", "#e08a2e", "#4c9a5b", "#b5485d", "#7a5cb0", "#8c8c8c"]
FONT = "font-family='system-ui,-apple-system,Segoe UI,sans-serif' font-size='12'"


def nice_max(v: float) -> float:
    """Round an axis maximum up to 1/2/2.5/5 × 10^k."""
    if v <= 0 or not math.isfinite(v):
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def _ticks(vmax: float, n: int = 4) -> list[float]:
    return [vmax * i / n for i in range(n + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def hbar_chart(labels: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], *, unit: str = "",
               title: str = "", errors: Sequence[Sequence[tuple[float, float] | None]] | None = None,
               width: int = 560, vmin: float = 0.0, vmax: float | None = None,
               value_fmt: Callable[[float], str] | None = None) -> str:
    """Horizontal grouped bars: one group per label, one bar per series.

    ``errors[s][i]`` = (low, high) draws a whisker for bar i of series s (e.g. p50 bar, p90 whisker,
    or an accuracy confidence interval).
    """
    fmt = value_fmt or _fmt
    n_series = len(series)
    bar_h, gap = 14, 10
    label_w = min(260, max(90, 7 * max((len(lb) for lb in labels), default=8)))
    legend_h = 20 if n_series > 1 else 0
    top = 26 + legend_h
    group_h = n_series * bar_h + gap
    plot_w = width - label_w - 70
    height = top + len(labels) * group_h + 28
    values = [v for _, vals in series for v in vals if v is not None]
    highs = [e[1] for errs in (errors or []) for e in errs if e is not None]
    top_v = vmax if vmax is not None else nice_max(max(values + highs + [vmin + 1e-12]))
    span = max(top_v - vmin, 1e-12)

    def x(v: float) -> float:
        return label_w + plot_w * (min(max(v, vmin), top_v) - vmin) / span

    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
           f"viewBox='0 0 {width} {height}' role='img' aria-label='{escape(title)}' {FONT}>"]
    if title:
        out.append(f"<text x='0' y='15' font-weight='600' font-size='13'>{escape(title)}</text>")
    if n_series > 1:
        lx = label_w
        for k, (name, _) in enumerate(series):
            out.append(f"<rect x='{lx}' y='{26}' width='10' height='10' fill='{PALETTE[k % len(PALETTE)]}'/>"
                       f"<text x='{lx + 14}' y='{35}'>{escape(name)}</text>")
            lx += 24 + 7 * len(name)
    axis_y = top + len(labels) * group_h
    for t in _ticks(top_v - vmin):
        tx = x(vmin + t)
        out.append(f"<line x1='{tx:.1f}' y1='{top - 4}' x2='{tx:.1f}' y2='{axis_y}' stroke='#e3e3e3'/>"
                   f"<text x='{tx:.1f}' y='{axis_y + 14}' text-anchor='middle' fill='#666'>"
                   f"{escape(_fmt(vmin + t))}</text>")
    if unit:
        out.append(f"<text x='{label_w + plot_w}' y='{axis_y + 27}' text-anchor='end' fill='#666'>"
                   f"{escape(unit)}</text>")
    for i, lb in enumerate(labels):
        gy = top + i * group_h
        short = lb if len(lb) <= 40 else lb[:38] + "…"
        out.append(f"<text x='{label_w - 6}' y='{gy + n_series * bar_h / 2 + 4:.1f}' text-anchor='end'>"
                   f"<title>{escape(lb)}</title>{escape(short)}</text>")
        for k, (_, vals) in enumerate(series):
            v = vals[i] if i < len(vals) else None
            by = gy + k * bar_h
            if v is None:
                out.append(f"<text x='{label_w + 4}' y='{by + 11}' fill='#999'>n/a</text>")
                continue
            color = PALETTE[k % len(PALETTE)]
            out.append(f"<rect x='{label_w}' y='{by + 1}' width='{max(x(v) - label_w, 1):.1f}' "
                       f"height='{bar_h - 3}' fill='{color}'><title>{escape(fmt(v))} {escape(unit)}</title></rect>")
            err = errors[k][i] if errors and k < len(errors) and i < len(errors[k]) else None
            end = x(v)
            if err is not None:
                lo, hi = x(err[0]), x(err[1])
                cy = by + (bar_h - 2) / 2
                out.append(f"<line x1='{lo:.1f}' y1='{cy:.1f}' x2='{hi:.1f}' y2='{cy:.1f}' stroke='#222'/>"
                           f"<line x1='{hi:.1f}' y1='{cy - 4:.1f}' x2='{hi:.1f}' y2='{cy + 4:.1f}' stroke='#222'/>"
                           f"<line x1='{lo:.1f}' y1='{cy - 4:.1f}' x2='{lo:.1f}' y2='{cy + 4:.1f}' stroke='#222'/>")
                end = max(end, hi)
            out.append(f"<text x='{end + 4:.1f}' y='{by + 10}' fill='#333'>{escape(fmt(v))}</text>")
    out.append("</svg>")
    return "".join(out)


def stacked_bar(rows: Sequence[tuple[str, dict[str, float]]], *, title: str = "", unit: str = "",
                width: int = 560) -> str:
    """One horizontal stacked bar per row (e.g. bytes by dtype before/after), shared scale."""
    keys: list[str] = []
    for _, parts in rows:
        keys += [k for k in parts if k not in keys]
    total = max((sum(p.values()) for _, p in rows), default=1.0) or 1.0
    label_w, bar_h, top = 110, 20, 44
    plot_w = width - label_w - 90
    height = top + len(rows) * (bar_h + 10) + 6
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
           f"viewBox='0 0 {width} {height}' role='img' aria-label='{escape(title)}' {FONT}>"]
    if title:
        out.append(f"<text x='0' y='15' font-weight='600' font-size='13'>{escape(title)}</text>")
    lx = label_w
    for k, key in enumerate(keys):
        out.append(f"<rect x='{lx}' y='24' width='10' height='10' fill='{PALETTE[k % len(PALETTE)]}'/>"
                   f"<text x='{lx + 14}' y='33'>{escape(key)}</text>")
        lx += 24 + 7 * len(key)
    for i, (label, parts) in enumerate(rows):
        y = top + i * (bar_h + 10)
        out.append(f"<text x='{label_w - 6}' y='{y + 14}' text-anchor='end'>{escape(label)}</text>")
        x = float(label_w)
        for k, key in enumerate(keys):
            v = parts.get(key, 0.0)
            w = plot_w * v / total
            if w > 0:
                out.append(f"<rect x='{x:.1f}' y='{y}' width='{max(w, 0.5):.1f}' height='{bar_h}' "
                           f"fill='{PALETTE[k % len(PALETTE)]}'><title>{escape(key)}: {escape(_fmt(v))} "
                           f"{escape(unit)}</title></rect>")
            x += w
        out.append(f"<text x='{x + 6:.1f}' y='{y + 14}' fill='#333'>{escape(_fmt(sum(parts.values())))} "
                   f"{escape(unit)}</text>")
    out.append("</svg>")
    return "".join(out)
