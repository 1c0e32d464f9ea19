"""Weight histograms (pyqtgraph): one or several tensors overlaid, linear or log counts.

Sampled histograms are labelled "sampled" in the legend and the caption, because a
sample can hide rare outliers; "after" series (a pipeline variant) are drawn
dashed over the original so a before/after comparison reads at a glance.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from slimline.gui.theme import SERIES, cache_axes


@dataclass
class HistSeries:
    """One histogram to draw. ``role`` is "before" (the open model) or "after" (a variant)."""

    label: str
    edges: np.ndarray
    counts: np.ndarray
    sampled: bool = False
    n: int = 0
    role: str = "before"

    @classmethod
    def from_engine(cls, label: str, hist: Any, role: str = "before") -> HistSeries:
        return cls(label=label, edges=np.asarray(hist.edges, dtype=float), counts=np.asarray(hist.counts, dtype=float),
                   sampled=bool(getattr(hist, "sampled", False)), n=int(getattr(hist, "n", 0) or 0), role=role)

    @property
    def legend(self) -> str:
        tag = " (sampled)" if self.sampled else ""
        who = " — after" if self.role == "after" else ""
        return f"{self.label}{who}{tag}"


class HistogramView(QWidget):
    """A pyqtgraph plot plus a log-count toggle and a caption that says what is shown."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        import pyqtgraph as pg

        self._series: list[HistSeries] = []
        self.plot = pg.PlotWidget()
        self.plot.setLabel("bottom", "weight value")
        self.plot.setLabel("left", "count")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.getAxis("bottom").enableAutoSIPrefix(False)
        cache_axes(self.plot)
        self.legend = self.plot.addLegend(offset=(-10, 10))
        self.log_check = QCheckBox("Log count axis")
        self.caption = QLabel("Select a layer to see its weight distribution.")
        self.caption.setWordWrap(True)
        bar = QHBoxLayout()
        bar.addWidget(self.caption, 1)
        bar.addWidget(self.log_check)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(bar)
        lay.addWidget(self.plot, 1)
        self.log_check.toggled.connect(self._on_log_check_toggled)

    # --- public ------------------------------------------------------------------------
    @property
    def series(self) -> list[HistSeries]:
        return list(self._series)

    @property
    def log_scale(self) -> bool:
        return self.log_check.isChecked()

    def set_series(self, series: Sequence[HistSeries]) -> None:
        self._series = list(series)
        self._redraw()

    def add_series(self, s: HistSeries) -> None:
        self._series = [x for x in self._series if not (x.label == s.label and x.role == s.role)] + [s]
        self._redraw()

    def clear(self, message: str = "Select a layer to see its weight distribution.") -> None:
        self._series = []
        self._redraw()
        self.caption.setText(message)

    def plotted_item_count(self) -> int:
        return len(self.plot.getPlotItem().listDataItems())

    # --- drawing -----------------------------------------------------------------------
    def _redraw(self) -> None:
        import pyqtgraph as pg

        item = self.plot.getPlotItem()
        item.clear()
        self.legend.clear()
        log = self.log_scale
        item.setLogMode(False, log)
        colors: dict[str, str] = {}
        for s in self._series:
            color = colors.setdefault(s.label, SERIES[len(colors) % len(SERIES)])
            counts = s.counts.astype(float)
            if log:  # log10(0) is undefined: empty bins are drawn at the axis floor (0.5)
                counts = np.where(counts > 0, counts, 0.5)
            pen = pg.mkPen(color, width=2, style=Qt.PenStyle.DashLine if s.role == "after" else Qt.PenStyle.SolidLine)
            fill = None if (log or s.role == "after" or len(self._series) > 2) else pg.mkBrush(color + "40")
            curve = pg.PlotDataItem(s.edges, counts, stepMode="center", pen=pen, fillLevel=None if fill is None else 0,
                                    brush=fill, name=s.legend)
            item.addItem(curve)
        self.plot.setLabel("left", "count (log)" if log else "count")
        if self._series:
            parts = []
            for s in self._series:
                tag = f"sampled, {s.n:,} of the values" if s.sampled else f"exact, n={s.n:,}"
                parts.append(f"{s.legend.replace(' (sampled)', '')}: {tag}")
            self.caption.setText("; ".join(parts))
        item.enableAutoRange()

    def _on_log_check_toggled(self, _on: bool) -> None:
        self._redraw()


if __name__ == "__main__":  # python -m slimline.gui.histogram_view
    import sys

    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv)
    rng = np.random.default_rng(0)
    view = HistogramView()
    a = rng.normal(0, 1, 5000)
    b = np.where(np.abs(a) < 0.5, 0, a)
    for label, data, role, sampled in [("w", a, "before", False), ("w", b, "after", True)]:
        counts, edges = np.histogram(data, bins=64)
        view.add_series(HistSeries(label, edges, counts, sampled, data.size, role))
    view.resize(700, 400)
    view.show()
    sys.exit(app.exec())
