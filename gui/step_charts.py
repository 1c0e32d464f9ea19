"""Per-step charts that grow as results arrive: size, p50 latency with p90 whiskers, accuracy.

Each chart has the original model as its first point and a dashed baseline at
its value, so every step reads as "better or worse than what we started with".
Flagged steps (bigger / slower / over budget) are drawn red with the flag
written next to the point: a step that hurts is never shown as a success.
The loss chart plots live distillation loss events.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGridLayout, QLabel, QWidget

from slimline.gui.results import latency_report, quality
from slimline.gui.theme import FLAG_COLOR, SERIES

FLAG_FOR = {"size": {"bigger"}, "latency": {"slower"}, "quality": {"over_budget"}}


class StepCharts(QWidget):
    """Three per-step charts and a live loss curve."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        import pyqtgraph as pg

        self.results: list[dict[str, Any]] = []
        self.loss: dict[str, list[tuple[float, float]]] = {}
        self.size_plot = pg.PlotWidget(title="Size on disk (MB)")
        self.lat_plot = pg.PlotWidget(title="Latency p50 (ms), whisker to p90")
        self.acc_plot = pg.PlotWidget(title="Accuracy")
        self.loss_plot = pg.PlotWidget(title="Distillation loss (live)")
        self.loss_plot.setLabel("bottom", "training step (batch)")
        self.loss_plot.addLegend()
        for p in (self.size_plot, self.lat_plot, self.acc_plot, self.loss_plot):
            p.showGrid(x=False, y=True, alpha=0.25)
            p.setMinimumHeight(160)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        lay = QGridLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.size_plot, 0, 0)
        lay.addWidget(self.lat_plot, 0, 1)
        lay.addWidget(self.acc_plot, 1, 0)
        lay.addWidget(self.loss_plot, 1, 1)
        lay.addWidget(self.note, 2, 0, 1, 2)
        self.series_points: dict[str, int] = {"size": 0, "latency": 0, "quality": 0}
        self._redraw_loss()

    def clear(self) -> None:
        self.results = []
        self.loss = {}
        self._redraw()
        self._redraw_loss()

    def add_result(self, result: dict[str, Any]) -> None:
        self.results = [r for r in self.results if r.get("step_id") != result.get("step_id")] + [result]
        self._redraw()

    def add_metric(self, event: dict[str, Any]) -> None:
        self.add_metrics([event])

    def add_metrics(self, events: list[dict[str, Any]]) -> None:
        """Append loss points (``metric`` events of kind "loss"); one redraw per batch."""
        added = False
        for event in events:
            if event.get("kind") != "loss":
                continue
            p = event.get("payload") or {}
            value = p.get("value", p.get("loss"))
            if value is None:
                continue
            x = p.get("step", p.get("x"))
            if x is None:
                epoch, batch, nb = p.get("epoch", 0), p.get("batch"), p.get("batches")
                x = float(epoch) + (float(batch) / float(nb) if batch is not None and nb else 0.0)
            series = str(p.get("series") or p.get("name") or f"{event.get('step_id') or ''} train loss").strip()
            self.loss.setdefault(series, []).append((float(x), float(value)))
            added = True
        if added:
            self._redraw_loss()

    def loss_point_count(self) -> int:
        return sum(len(v) for v in self.loss.values())

    # --- drawing -----------------------------------------------------------------------
    def _axis(self, plot: Any, labels: list[str]) -> None:
        plot.getAxis("bottom").setTicks([list(enumerate(labels))])

    def _draw(self, plot: Any, key: str, ys: list[float | None], labels: list[str], flagged: list[bool],
              tops: list[float | None] | None = None, bars: bool = False) -> None:
        import pyqtgraph as pg

        plot.clear()
        self._axis(plot, labels)
        xs = [i for i, y in enumerate(ys) if y is not None]
        vals = [float(y) for y in ys if y is not None]
        self.series_points[key] = len(xs)
        if not xs:
            return
        brushes = [pg.mkBrush(FLAG_COLOR if flagged[i] else SERIES[0]) for i in xs]
        if bars:
            plot.addItem(pg.BarGraphItem(x=xs, height=vals, width=0.6, brushes=brushes))
        else:
            plot.addItem(pg.PlotDataItem(xs, vals, pen=pg.mkPen(SERIES[0], width=1)))
            plot.addItem(pg.ScatterPlotItem(x=xs, y=vals, size=11, brush=brushes, pen=None))
        if tops is not None:
            top = [max(0.0, float(tops[i]) - float(ys[i])) if tops[i] is not None else 0.0 for i in xs]
            plot.addItem(pg.ErrorBarItem(x=np.array(xs, dtype=float), y=np.array(vals), top=np.array(top),
                                         bottom=np.zeros(len(xs)), beam=0.2, pen=pg.mkPen("#888", width=1.5)))
        if ys[0] is not None:
            plot.addItem(pg.InfiniteLine(pos=float(ys[0]), angle=0,
                                         pen=pg.mkPen("#888", width=1, style=Qt.PenStyle.DashLine)))
        for i in xs:
            if flagged[i]:
                flags = [f for f in self.results[i].get("flags") or [] if f in FLAG_FOR[key]]
                t = pg.TextItem("⚑ " + ", ".join(flags), color=FLAG_COLOR, anchor=(0.5, 1.2))
                t.setPos(i, float(ys[i]))
                plot.addItem(t)
        plot.setXRange(-0.6, len(labels) - 0.4)
        plot.enableAutoRange(axis="y")

    def _redraw(self) -> None:
        labels = [str(r.get("step_id")) for r in self.results]
        def flagged(key: str) -> list[bool]:
            return [bool(set(r.get("flags") or []) & FLAG_FOR[key]) for r in self.results]

        sizes = [((r.get("size") or {}).get("bytes_on_disk") or 0) / 1e6 if r.get("size") else None for r in self.results]
        self._draw(self.size_plot, "size", sizes, labels, flagged("size"), bars=True)
        reps = [latency_report(r) for r in self.results]
        p50 = [rep["p50_ms"] if rep else None for rep in reps]
        p90 = [rep["p90_ms"] if rep else None for rep in reps]
        self._draw(self.lat_plot, "latency", p50, labels, flagged("latency"), tops=p90)
        qs = [quality(r) for r in self.results]
        self._draw(self.acc_plot, "quality", [q.value for q in qs], labels, flagged("quality"))
        named = next((q for q in qs if q.value is not None), None)
        self.acc_plot.setTitle(named.label if named else "Accuracy (no evaluation data)")
        rep0 = next((rep for rep in reps if rep), None)
        if rep0:
            kind = "random inputs" if rep0.get("input_kind") == "random" else f"data: {rep0.get('dataset') or 'dataset'}"
            self.lat_plot.setTitle(f"Latency p50 (ms), whisker to p90 — batch {rep0.get('batch')}, "
                                   f"{rep0.get('runs')} runs, {kind}")
        notes = []
        for r in self.results:
            if r.get("flags"):
                notes.append(f"⚑ {r.get('step_id')}: " + "; ".join(r.get("warnings") or r.get("flags")))
        self.note.setText("\n".join(notes))
        self.note.setStyleSheet(f"color: {FLAG_COLOR};" if notes else "")

    def _redraw_loss(self) -> None:
        import pyqtgraph as pg

        if not self.loss:
            self.loss_plot.clear()
            self._loss_items: dict[str, Any] = {}
            hint = pg.TextItem("Appears live while a distillation step trains\n(a cached step does not retrain)",
                               color="#888", anchor=(0.5, 0.5))
            hint.setPos(0.5, 0.5)
            self.loss_plot.addItem(hint)
            return
        if not getattr(self, "_loss_items", None):
            self.loss_plot.clear()
        items = getattr(self, "_loss_items", {})
        for i, (name, pts) in enumerate(self.loss.items()):
            if name not in items:
                items[name] = self.loss_plot.plot([], [], pen=pg.mkPen(SERIES[(i + 2) % len(SERIES)], width=2),
                                                  name=name)
            xs = np.fromiter((p[0] for p in pts), float, len(pts))
            ys = np.fromiter((p[1] for p in pts), float, len(pts))
            items[name].setData(xs, ys)
        self._loss_items = items

if __name__ == "__main__":  # python -m slimline.gui.step_charts
    import sys

    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv)
    view = StepCharts()
    lat = lambda p50: {1: {"p50_ms": p50, "p90_ms": p50 * 1.2, "batch": 1, "runs": 50, "input_kind": "dataset"}}  # noqa: E731
    acc = lambda a: {"dataset": "digits_eval", "n": 449, "top1": a}  # noqa: E731
    for r in [{"step_id": "original", "size": {"bytes_on_disk": 3.0e6}, "latency": lat(1.0), "accuracy": acc(0.995)},
              {"step_id": "s1", "size": {"bytes_on_disk": 0.8e6}, "latency": lat(0.5), "accuracy": acc(0.98),
               "flags": ["over_budget"], "warnings": ["top-1 drop 1.5 points > budget 1"]},
              {"step_id": "s2", "size": {"bytes_on_disk": 0.3e6}, "latency": lat(0.7), "accuracy": acc(0.978),
               "flags": ["slower"]}]:
        view.add_result(r)
    for e in range(10):
        view.add_metric({"step_id": "s2", "kind": "loss", "payload": {"epoch": e, "value": 1 / (e + 1)}})
    view.resize(1000, 600)
    view.show()
    sys.exit(app.exec())
