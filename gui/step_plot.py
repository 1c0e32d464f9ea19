"""One per-step chart (bars, or points on a line with optional p90 whiskers) for StepCharts.

Why its own class: a run redraws every chart after each step, and recreating
pyqtgraph items was the expensive part; a StepPlot creates its items once and
only hands them new data. It knows nothing about results: it draws values,
labels, flags and notes that slimline.gui.step_charts derives from them.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import Qt

from slimline.gui.theme import FLAG_COLOR, OTHER_FLAG_COLOR, SERIES, cache_axes


class StepPlot:
    """One per-step chart; items are created once and only get new data."""

    def __init__(self, title: str, bars: bool = False, whiskers: bool = False) -> None:
        import pyqtgraph as pg

        self.plot = pg.PlotWidget(title=title)
        # no grid: pyqtgraph's translucent grid doubled the cost of every axis redraw (~5 ms → ~9 ms)
        self.plot.setMinimumHeight(160)
        self.plot.setMouseEnabled(x=False, y=False)
        cache_axes(self.plot)
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.6) if bars else None
        self.line = None if bars else pg.PlotDataItem([], [], pen=pg.mkPen(SERIES[0], width=1))
        self.points = None if bars else pg.ScatterPlotItem(size=11, pen=None, hoverable=True,
                                                            tip=lambda x, y, data: f"{data}: {y:.4g}")
        self.whiskers = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), top=np.zeros(0), bottom=np.zeros(0),
                                        beam=0.2, pen=pg.mkPen("#888", width=1.5)) if whiskers else None
        self.baseline = pg.InfiniteLine(pos=0.0, angle=0, pen=pg.mkPen("#888", width=1, style=Qt.PenStyle.DashLine))
        for item in (self.bars, self.line, self.points, self.whiskers, self.baseline):
            if item is not None:
                self.plot.addItem(item)
        self.baseline.hide()
        self.texts: list[Any] = []
        self.brush_ok, self.brush_flag = pg.mkBrush(SERIES[0]), pg.mkBrush(FLAG_COLOR)
        self.pen_other = pg.mkPen(OTHER_FLAG_COLOR, width=2.5)
        self.pen_plain = pg.mkPen("#666", width=0.5)

    def _text(self, i: int) -> Any:
        import pyqtgraph as pg

        while len(self.texts) <= i:
            t = pg.TextItem("", anchor=(0.5, 1.2))
            self.plot.addItem(t)
            self.texts.append(t)
        return self.texts[i]

    def update(self, ys: list[float | None], labels: list[str], flagged: list[bool],
               notes: list[tuple[str, str]], tops: list[float | None] | None = None,
               bottoms: list[float | None] | None = None) -> int:
        """Show the values; ``notes[i]`` = (text, colour) written above point i. Returns points drawn.

        ``tops`` / ``bottoms``: whisker ends (p90 above; an interval's low and high), drawn when the plot has whiskers.
        """
        self.plot.getAxis("bottom").setTicks([list(enumerate(labels))])
        present = [(i, float(y)) for i, y in enumerate(ys) if y is not None]
        xs = [i for i, _ in present]
        vals = [y for _, y in present]
        x_arr, y_arr = np.array(xs, dtype=float), np.array(vals, dtype=float)
        brushes = [self.brush_flag if flagged[i] else self.brush_ok for i in xs]
        pens = [self.pen_other if notes[i][0] and not flagged[i] else self.pen_plain for i in xs]
        if self.bars is not None:
            if xs:
                self.bars.setOpts(x=x_arr, height=y_arr, width=0.6, brushes=brushes, pens=pens)
            else:  # pyqtgraph 0.14 fails on empty brush/pen lists
                self.bars.setOpts(x=x_arr, height=y_arr, width=0.6, brushes=None, pens=None)
        else:
            assert self.line is not None and self.points is not None
            self.line.setData(x_arr, y_arr)
            self.points.setData(x=x_arr, y=y_arr, brush=brushes, data=[labels[i] for i in xs], pen=pens)
        if self.whiskers is not None:
            top_of = [tops[i] if tops else None for i in xs]
            top = np.array([max(0.0, float(t) - y) if t is not None else 0.0 for t, y in zip(top_of, vals)])
            bottom_of = [bottoms[i] if bottoms else None for i in xs]
            bottom = np.array([max(0.0, y - float(b)) if b is not None else 0.0 for b, y in zip(bottom_of, vals)])
            self.whiskers.setData(x=x_arr, y=y_arr, top=top, bottom=bottom)
        self.baseline.setVisible(bool(ys) and ys[0] is not None)
        if ys and ys[0] is not None:
            self.baseline.setValue(float(ys[0]))
        shown = 0
        for i, y in present:
            text, color = notes[i]
            if text:
                t = self._text(shown)
                t.setText(text, color=color)
                t.setPos(i, y)
                t.show()
                shown += 1
        for t in self.texts[shown:]:
            t.hide()
        self.plot.setXRange(-0.6, max(len(labels), 1) - 0.4, padding=0)
        if vals:
            lo = min(vals + ([0.0] if self.bars is not None else [])
                     + [float(b) for b in (bottoms or []) if b is not None])
            hi = max(vals[k] + (max(0.0, float(tops[xs[k]] or 0) - vals[k]) if tops else 0.0) for k in range(len(xs)))
            span = (hi - lo) or abs(hi) or 1.0
            self.plot.setYRange(lo - 0.08 * span, hi + 0.25 * span, padding=0)  # room for the flag text
        return len(xs)
