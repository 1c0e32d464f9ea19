"""Overview across depth: std and sparsity per tensor, in model order.

Scanning a bar of numbers per layer is how one spots the odd layer out (a
collapsed std, a layer pruned to 90 %); clicking a point selects that layer in
the table and the histogram.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QVBoxLayout, QWidget

from slimline.gui.theme import SERIES, cache_axes


def _get(row: Any, key: str) -> Any:
    return row.get(key) if isinstance(row, dict) else getattr(row, key, None)


class OverviewChart(QWidget):
    """Two linked plots (std on top, sparsity below); emits ``layer_clicked(name)``."""

    layer_clicked = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        import pyqtgraph as pg

        self._names: list[str] = []
        self.glw = pg.GraphicsLayoutWidget()
        self.std_plot = self.glw.addPlot(row=0, col=0)
        self.std_plot.setLabel("left", "std")
        self.std_plot.showGrid(x=True, y=True, alpha=0.2)
        self.sp_plot = self.glw.addPlot(row=1, col=0)
        self.sp_plot.setLabel("left", "sparsity")
        self.sp_plot.setLabel("bottom", "tensor index (model order)")
        self.sp_plot.setXLink(self.std_plot)
        self.sp_plot.showGrid(x=True, y=True, alpha=0.2)
        for plot in (self.std_plot, self.sp_plot):
            for ax in ("left", "bottom"):
                plot.getAxis(ax).enableAutoSIPrefix(False)
        self.std_points = pg.ScatterPlotItem(size=9, brush=pg.mkBrush(SERIES[0]), hoverable=True)
        self.sp_points = pg.ScatterPlotItem(size=9, brush=pg.mkBrush(SERIES[1]), hoverable=True)
        self.std_line = pg.PlotCurveItem(pen=pg.mkPen(SERIES[0], width=1))
        self.sp_line = pg.PlotCurveItem(pen=pg.mkPen(SERIES[1], width=1))
        self.marker = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#888", width=1))
        for plot, line, pts in [(self.std_plot, self.std_line, self.std_points),
                                (self.sp_plot, self.sp_line, self.sp_points)]:
            plot.addItem(line)
            plot.addItem(pts)
        self.std_plot.addItem(self.marker)
        self.marker.hide()
        cache_axes(self.std_plot)
        cache_axes(self.sp_plot)
        self.std_points.sigClicked.connect(self._on_points_clicked)
        self.sp_points.sigClicked.connect(self._on_points_clicked)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.glw)

    def set_rows(self, rows: Sequence[Any]) -> None:
        """Plot rows that have stats; rows still pending are skipped."""
        xs, std, sp, names = [], [], [], []
        for i, r in enumerate(rows):
            s = _get(r, "std")
            if s is None:
                continue
            xs.append(i)
            std.append(float(s))
            sp.append(float(_get(r, "sparsity") or 0.0))
            names.append(str(_get(r, "name")))
        self._names = [str(_get(r, "name")) for r in rows]
        self.std_line.setData(xs, std)
        self.sp_line.setData(xs, sp)
        self.std_points.setData(x=xs, y=std, data=names, tip=self._tip)
        self.sp_points.setData(x=xs, y=sp, data=names, tip=self._tip)
        self.std_plot.enableAutoRange()
        self.sp_plot.enableAutoRange(axis="x")
        self.sp_plot.setYRange(0, max([0.05] + [v * 1.1 for v in sp]), padding=0)  # a fraction: 0 at the bottom

    def point_count(self) -> int:
        return len(self.std_points.data)

    def mark(self, name: str) -> None:
        if name in self._names:
            self.marker.setValue(self._names.index(name))
            self.marker.show()
        else:
            self.marker.hide()

    def click_index(self, i: int) -> None:
        """Same as clicking the i-th plotted point (used by tests and keyboard users)."""
        pts = self.std_points.points()
        if 0 <= i < len(pts):
            self._on_points_clicked(self.std_points, [pts[i]])

    @staticmethod
    def _tip(x: float, y: float, data: Any) -> str:
        return f"{data}\nindex {int(x)}: {y:.4g}"

    def _on_points_clicked(self, _item: Any, points: Any, *_: Any) -> None:
        if len(points):
            name = points[0].data()
            self.mark(name)
            self.layer_clicked.emit(name)


if __name__ == "__main__":  # python -m slimline.gui.overview_chart
    import sys

    from PySide6.QtWidgets import QApplication

    from slimline.gui.layer_table import _demo_rows

    app = QApplication(sys.argv)
    view = OverviewChart()
    view.set_rows(_demo_rows())
    view.layer_clicked.connect(print)
    view.resize(700, 400)
    view.show()
    sys.exit(app.exec())
