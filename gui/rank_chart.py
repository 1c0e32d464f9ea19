"""A ranked horizontal bar chart of layers: click a bar to select its layer, double-click to act on it.

Used for the sensitivity ranking and the before/after diff. Bars measured with the end metric are drawn
in the series colour; bars from a cheap score only are muted (and scaled to the measured ones, which the
caption says); excluded layers are drawn grey with "(excluded)" in their label. The chart knows rows, not
engines: ``set_bars`` takes plain (key, label, value, kind) tuples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from slimline.gui.theme import SERIES, cache_axes

MAX_BARS = 24
# fills by kind; the selected bar keeps its fill and gets a thick outline (an excluded layer stays grey)
KIND_COLOURS = {"measured": SERIES[0], "cheap": "#9bb7d4", "excluded": "#b8b8b8", "selected": SERIES[1]}


@dataclass(frozen=True)
class Bar:
    key: str          # what selecting the bar emits (a tensor name)
    label: str        # axis text
    value: float      # bar length
    kind: str = "measured"   # measured | cheap | excluded
    tip: str = ""
    value_text: str = ""     # written at the bar's end (default: the value)


class RankChart(QWidget):
    """Signals: ``bar_clicked(key)``, ``bar_double_clicked(key)``."""

    bar_clicked = Signal(str)
    bar_double_clicked = Signal(str)

    def __init__(self, title: str = "", unit: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        import pyqtgraph as pg

        self.bars: list[Bar] = []
        self.selected = ""
        self.plot = pg.PlotWidget(title=title)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.showGrid(x=True, y=False, alpha=0.2)
        self.plot.setLabel("bottom", unit)
        self.plot.getAxis("bottom").enableAutoSIPrefix(False)
        cache_axes(self.plot)
        self.item = pg.BarGraphItem(x0=[], y=[], height=[], width=[], brushes=[])
        self.plot.addItem(self.item)
        self._labels: list[Any] = []   # value text at each bar's end (tiny bars stay readable)
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.caption)
        self.plot.scene().sigMouseClicked.connect(self._on_scene_clicked)

    def set_bars(self, bars: list[Bar], caption: str = "") -> None:
        self.bars = list(bars)[:MAX_BARS]
        self.caption.setText(caption + (f" (top {MAX_BARS} of {len(bars)})" if len(bars) > MAX_BARS else ""))
        self._redraw()

    def set_unit(self, unit: str) -> None:
        self.plot.setLabel("bottom", unit)

    def select(self, key: str) -> None:
        """Highlight ``key``'s bar (no signal: the caller already knows)."""
        self.selected = key
        self._redraw()

    def index_of(self, key: str) -> int:
        return next((i for i, b in enumerate(self.bars) if b.key == key), -1)

    def click_bar(self, i: int, double: bool = False) -> None:
        """Same as clicking the i-th bar from the top (tests and keyboard users)."""
        if 0 <= i < len(self.bars):
            self._clicked(self.bars[i].key, double)

    def _redraw(self) -> None:
        import pyqtgraph as pg

        n = len(self.bars)
        ys = [float(-i) for i in range(n)]
        widths = [max(float(b.value), 0.0) for b in self.bars]
        brushes = [pg.mkBrush(KIND_COLOURS.get(b.kind, SERIES[0])) for b in self.bars]
        pens = [pg.mkPen(KIND_COLOURS["selected"], width=4) if b.key == self.selected else pg.mkPen("#555", width=1)
                for b in self.bars]
        # pyqtgraph 0.13 fails on an empty ``pens`` list: no bars, no per-bar pens
        self.item.setOpts(x0=[0.0] * n, y=ys, height=[0.7] * n, width=widths, brushes=brushes, pens=pens or None)
        self.plot.getAxis("left").setTicks([[(y, b.label) for y, b in zip(ys, self.bars)]])
        for label in self._labels:
            self.plot.removeItem(label)
        self._labels = []
        top = max(widths + [1e-12])
        for y, w, b in zip(ys, widths, self.bars):
            text = pg.TextItem(b.value_text or f"{b.value:.3g}", color="#333", anchor=(0, 0.5))
            text.setPos(w, y)
            self.plot.addItem(text)
            self._labels.append(text)
        if n:
            self.plot.setYRange(-n + 0.4, 0.6, padding=0)
            self.plot.setXRange(0, top * 1.18, padding=0)

    def _on_scene_clicked(self, ev: object) -> None:
        vb = self.plot.getPlotItem().vb
        pos = vb.mapSceneToView(ev.scenePos())  # type: ignore[attr-defined]
        i = int(round(-pos.y()))
        if 0 <= i < len(self.bars) and pos.x() >= 0:
            self._clicked(self.bars[i].key, bool(ev.double()))  # type: ignore[attr-defined]

    def _clicked(self, key: str, double: bool) -> None:
        self.select(key)
        (self.bar_double_clicked if double else self.bar_clicked).emit(key)


if __name__ == "__main__":  # python -m slimline.gui.rank_chart
    import sys

    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv)
    view = RankChart("Demo ranking", "metric lost")
    view.set_bars([Bar(f"layer{i}.weight", f"layer{i}", 1.0 / (i + 1), "measured" if i < 4 else "cheap")
                   for i in range(10)], "demo")
    view.bar_clicked.connect(print)
    view.resize(600, 400)
    view.show()
    sys.exit(app.exec())
