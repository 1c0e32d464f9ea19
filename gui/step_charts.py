"""Per-step charts that grow as results arrive: size, p50 latency with p90 whiskers, accuracy.

Each chart has the original model as its first point and a dashed baseline at
its value, so every step reads as "better or worse than what we started with".
Flagged steps (bigger / slower / over budget) are drawn red with the flag
written next to the point: a step that hurts is never shown as a success. When
the run measured several batch sizes a selector picks the batch; a "slower"
flag that concerns another batch stays visible (amber, "at batch 64").

Drawing is the UI thread's most expensive work during a run, so it is kept
cheap: the plot items are created once and only get new data (no clear and
re-create), the three charts are redrawn one per event-loop turn (each repaint
stays well under the 50 ms budget even on a busy CPU), and the live loss curve
is redrawn at most every LOSS_REDRAW_MS however fast loss events arrive.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QComboBox, QFrame, QGridLayout, QHBoxLayout, QLabel, QScrollArea, QWidget

from slimline.gui.results import latency_batches, latency_report, quality
from slimline.gui.theme import FLAG_COLOR, OTHER_FLAG_COLOR, SERIES, cache_axes, flag_text

FLAG_FOR = {"size": {"bigger"}, "latency": {"slower"}, "quality": {"over_budget"}}
STAGE_MS = 30          # gap between redrawing one chart and the next
LOSS_REDRAW_MS = 250   # live loss curve: at most 4 redraws a second
_SLOWER_AT = re.compile(r"slower at batch (\d+)")


def slower_batches(result: dict[str, Any]) -> set[int] | None:
    """Batches the "slower" flag concerns (from the engine's reasons); None = not said (all)."""
    if "slower" not in (result.get("flags") or []):
        return set()
    found = {int(m.group(1)) for w in result.get("warnings") or [] for m in [_SLOWER_AT.search(str(w))] if m}
    return found or None


def flag_reasons(result: dict[str, Any]) -> list[str]:
    """The engine's reasons for the flags (warnings that explain bigger/slower/over budget)."""
    return [str(w) for w in result.get("warnings") or []]


class _Chart:
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
               notes: list[tuple[str, str]], tops: list[float | None] | None = None) -> int:
        """Show the values; ``notes[i]`` = (text, colour) written above point i. Returns points drawn."""
        self.plot.getAxis("bottom").setTicks([list(enumerate(labels))])
        xs = [i for i, y in enumerate(ys) if y is not None]
        vals = [float(ys[i]) for i in xs]  # type: ignore[arg-type]
        x_arr, y_arr = np.array(xs, dtype=float), np.array(vals, dtype=float)
        brushes = [self.brush_flag if flagged[i] else self.brush_ok for i in xs]
        pens = [self.pen_other if notes[i][0] and not flagged[i] else self.pen_plain for i in xs]
        if self.bars is not None:
            if xs:
                self.bars.setOpts(x=x_arr, height=y_arr, width=0.6, brushes=brushes, pens=pens)
            else:  # pyqtgraph 0.14 fails on empty brush/pen lists
                self.bars.setOpts(x=x_arr, height=y_arr, width=0.6, brushes=None, pens=None)
        else:
            self.line.setData(x_arr, y_arr)
            self.points.setData(x=x_arr, y=y_arr, brush=brushes, data=[labels[i] for i in xs], pen=pens)
        if self.whiskers is not None:
            top = np.array([max(0.0, float(tops[i]) - float(ys[i])) if tops and tops[i] is not None else 0.0  # type: ignore[arg-type]
                            for i in xs])
            self.whiskers.setData(x=x_arr, y=y_arr, top=top, bottom=np.zeros(len(xs)))
        self.baseline.setVisible(bool(ys) and ys[0] is not None)
        if ys and ys[0] is not None:
            self.baseline.setValue(float(ys[0]))
        shown = 0
        for i in xs:
            text, color = notes[i]
            if text:
                t = self._text(shown)
                t.setText(text, color=color)
                t.setPos(i, float(ys[i]))  # type: ignore[arg-type]
                t.show()
                shown += 1
        for t in self.texts[shown:]:
            t.hide()
        self.plot.setXRange(-0.6, max(len(labels), 1) - 0.4, padding=0)
        if vals:
            lo = min(vals + ([0.0] if self.bars is not None else []))
            hi = max(vals[k] + (max(0.0, float(tops[xs[k]] or 0) - vals[k]) if tops else 0.0) for k in range(len(xs)))
            span = (hi - lo) or abs(hi) or 1.0
            self.plot.setYRange(lo - 0.08 * span, hi + 0.25 * span, padding=0)  # room for the flag text
        return len(xs)


class StepCharts(QWidget):
    """Three per-step charts and a live loss curve. ``batch_changed(int)`` when the user picks a batch."""

    batch_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        import pyqtgraph as pg

        self.results: list[dict[str, Any]] = []
        self.loss: dict[str, list[tuple[float, float]]] = {}
        self.batch: int | None = None
        self.size_chart = _Chart("Size on disk (MB)", bars=True)
        self.lat_chart = _Chart("Latency p50 (ms), whisker to p90", whiskers=True)
        self.acc_chart = _Chart("Accuracy")
        self.size_plot, self.lat_plot, self.acc_plot = self.size_chart.plot, self.lat_chart.plot, self.acc_chart.plot
        self.loss_plot = pg.PlotWidget(title="Distillation loss (live)")
        self.loss_plot.setLabel("bottom", "epoch")
        self.loss_plot.setMinimumHeight(160)
        self.loss_plot.addLegend()
        self.loss_plot.setClipToView(True)
        self.loss_plot.setDownsampling(auto=True, mode="peak")
        cache_axes(self.loss_plot)
        self._loss_items: dict[str, Any] = {}
        self.loss_hint = pg.TextItem("Appears live while a distillation step trains\n(a cached step does not retrain)",
                                     color="#888", anchor=(0.5, 0.5))
        self.loss_hint.setPos(0.5, 0.5)
        self.loss_plot.addItem(self.loss_hint)
        self.batch_combo = QComboBox()
        self.batch_combo.setToolTip("The run measured latency at several batch sizes; pick the one to chart")
        self.batch_label = QLabel("Latency at batch size:")
        self.batch_combo.currentIndexChanged.connect(self._on_batch_combo_changed)
        for w in (self.batch_combo, self.batch_label):
            w.hide()
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # a fixed-height, scrollable strip: flags arriving must not re-lay out (and repaint) all charts
        self.note_area = QScrollArea()
        self.note_area.setWidgetResizable(True)
        self.note_area.setFrameShape(QFrame.Shape.NoFrame)
        self.note_area.setWidget(self.note)
        self.note_area.setFixedHeight(self.fontMetrics().lineSpacing() * 4 + 6)
        bar = QHBoxLayout()
        bar.addStretch(1)
        bar.addWidget(self.batch_label)
        bar.addWidget(self.batch_combo)
        lay = QGridLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(bar, 0, 0, 1, 2)
        lay.addWidget(self.size_plot, 1, 0)
        lay.addWidget(self.lat_plot, 1, 1)
        lay.addWidget(self.acc_plot, 2, 0)
        lay.addWidget(self.loss_plot, 2, 1)
        lay.addWidget(self.note_area, 3, 0, 1, 2)
        self.series_points: dict[str, int] = {"size": 0, "latency": 0, "quality": 0}
        self._pending: list[str] = []
        self._stage = QTimer(self)
        self._stage.setInterval(STAGE_MS)
        self._stage.timeout.connect(self._on_stage_timeout)
        self._loss_timer = QTimer(self)
        self._loss_timer.setSingleShot(True)
        self._loss_timer.setInterval(LOSS_REDRAW_MS)
        self._loss_timer.timeout.connect(self._redraw_loss)

    # --- public ------------------------------------------------------------------------
    def clear(self) -> None:
        self.results = []
        self.loss = {}
        self.batch = None
        self._fill_batches()
        self._schedule()
        self.flush()
        self._redraw_loss()

    def add_result(self, result: dict[str, Any]) -> None:
        self.results = [r for r in self.results if r.get("step_id") != result.get("step_id")] + [result]
        self._fill_batches()
        self._schedule()

    def set_batch(self, batch: int) -> None:
        i = self.batch_combo.findData(int(batch))
        if i >= 0:
            self.batch_combo.setCurrentIndex(i)

    def batches(self) -> list[int]:
        return sorted({b for r in self.results for b in latency_batches(r)})

    def flush(self) -> None:
        """Draw everything pending now (tests, screenshots); normally the stage timer does it."""
        while self._pending:
            self._draw_next()
        self._stage.stop()
        if self._loss_timer.isActive():
            self._loss_timer.stop()
            self._redraw_loss()

    def add_metric(self, event: dict[str, Any]) -> None:
        self.add_metrics([event])

    def add_metrics(self, events: list[dict[str, Any]]) -> None:
        """Append loss points (``metric`` events of kind "loss"); the curve redraws on a timer."""
        added = False
        for event in events:
            if event.get("kind") != "loss":
                continue
            p = event.get("payload") or {}
            value = p.get("value", p.get("loss"))
            if value is None:
                continue
            x = p.get("step", p.get("x"))
            self._loss_unit = "training step (batch)" if x is not None else "epoch"
            if x is None:
                epoch, batch, nb = p.get("epoch", 0), p.get("batch"), p.get("batches")
                x = float(epoch) + (float(batch) / float(nb) if batch is not None and nb else 0.0)
            series = str(p.get("series") or p.get("name") or f"{event.get('step_id') or ''} train loss").strip()
            self.loss.setdefault(series, []).append((float(x), float(value)))
            added = True
        if added and not self._loss_timer.isActive():
            self._loss_timer.start()

    def loss_point_count(self) -> int:
        return sum(len(v) for v in self.loss.values())

    # --- batches -----------------------------------------------------------------------
    def _fill_batches(self) -> None:
        batches = self.batches()
        have = [self.batch_combo.itemData(i) for i in range(self.batch_combo.count())]
        if have != batches:
            self.batch_combo.blockSignals(True)
            self.batch_combo.clear()
            for b in batches:
                self.batch_combo.addItem(str(b), b)
            if self.batch not in batches:
                self.batch = batches[0] if batches else None
            if self.batch is not None:
                self.batch_combo.setCurrentIndex(batches.index(self.batch))
            self.batch_combo.blockSignals(False)
        several = len(batches) > 1
        self.batch_combo.setVisible(several)
        self.batch_label.setVisible(several)

    def _on_batch_combo_changed(self, _i: int) -> None:
        b = self.batch_combo.currentData()
        if b is None or b == self.batch:
            return
        self.batch = int(b)
        self._pending = [k for k in self._pending if k != "latency"]
        self._draw("latency")
        self.batch_changed.emit(self.batch)

    # --- drawing -----------------------------------------------------------------------
    def _schedule(self) -> None:
        for key in ("size", "latency", "quality", "notes"):
            if key not in self._pending:
                self._pending.append(key)
        if not self._stage.isActive():
            self._stage.start()

    def _on_stage_timeout(self) -> None:
        self._draw_next()
        if not self._pending:
            self._stage.stop()

    def _draw_next(self) -> None:
        if self._pending:
            self._draw(self._pending.pop(0))

    def _labels(self) -> list[str]:
        return [str(r.get("step_id")) for r in self.results]

    def _flagged(self, key: str) -> list[bool]:
        return [bool(set(r.get("flags") or []) & FLAG_FOR[key]) for r in self.results]

    def _flag_notes(self, key: str) -> list[tuple[str, str]]:
        out = []
        for r, hit in zip(self.results, self._flagged(key)):
            flags = [f for f in r.get("flags") or [] if f in FLAG_FOR[key]]
            out.append(("⚑ " + ", ".join(flags).replace("_", " "), flag_text()) if hit else ("", ""))
        return out

    def _draw(self, key: str) -> None:
        labels = self._labels()
        if key == "size":
            sizes = [((r.get("size") or {}).get("bytes_on_disk") or 0) / 1e6 if r.get("size") else None
                     for r in self.results]
            self.series_points["size"] = self.size_chart.update(sizes, labels, self._flagged("size"),
                                                                self._flag_notes("size"))
        elif key == "latency":
            self._draw_latency(labels)
        elif key == "quality":
            qs = [quality(r) for r in self.results]
            self.series_points["quality"] = self.acc_chart.update([q.value for q in qs], labels,
                                                                  self._flagged("quality"), self._flag_notes("quality"))
            named = next((q for q in qs if q.value is not None), None)
            self.acc_plot.setTitle(named.label if named else "Accuracy (no evaluation data)")
        else:
            notes = [f"⚑ {r.get('step_id')}: " + "; ".join(r.get("warnings") or r.get("flags"))
                     for r in self.results if r.get("flags")]
            self.note.setText("\n".join(notes))
            self.note.setStyleSheet(f"color: {flag_text()};" if notes else "")

    def _draw_latency(self, labels: list[str]) -> None:
        batch = self.batch
        reps = [latency_report(r, batch) if batch is not None else latency_report(r) for r in self.results]
        p50 = [rep["p50_ms"] if rep else None for rep in reps]
        p90 = [rep["p90_ms"] if rep else None for rep in reps]
        flagged: list[bool] = []
        notes: list[tuple[str, str]] = []
        for r in self.results:
            at = slower_batches(r)  # set(): not slower; None: slower, batch not said; else the batches
            here = at is None or (bool(at) and batch in at)
            flagged.append(here)
            if here:
                notes.append(("⚑ slower", flag_text()))
            elif at:
                notes.append((f"⚑ slower at batch {', '.join(str(b) for b in sorted(at))}", OTHER_FLAG_COLOR))
            else:
                notes.append(("", ""))
        self.series_points["latency"] = self.lat_chart.update(p50, labels, flagged, notes, tops=p90)
        rep0 = next((rep for rep in reps if rep), None)
        if rep0:
            acc = next((r.get("accuracy") for r in self.results if r.get("accuracy")), None)
            name = str(rep0.get("dataset") or (acc or {}).get("dataset") or "evaluation data").split(" (")[0]
            kind = "RANDOM inputs" if rep0.get("input_kind") == "random" else f"inputs: {name}"
            self.lat_plot.setTitle(f"Latency p50 (ms), whisker to p90 — batch {rep0.get('batch')}, "
                                   f"{rep0.get('runs')} runs, {kind}")
        else:
            self.lat_plot.setTitle("Latency p50 (ms), whisker to p90")

    def _redraw_loss(self) -> None:
        import pyqtgraph as pg

        if not self.loss:
            for item in self._loss_items.values():
                self.loss_plot.removeItem(item)
            self._loss_items = {}
            legend = self.loss_plot.getPlotItem().legend
            if legend is not None:
                legend.clear()
            self.loss_hint.show()
            return
        self.loss_hint.hide()
        self.loss_plot.setLabel("bottom", getattr(self, "_loss_unit", "epoch"))
        for i, (name, pts) in enumerate(self.loss.items()):
            if name not in self._loss_items:
                self._loss_items[name] = self.loss_plot.plot([], [], name=name,
                                                             pen=pg.mkPen(SERIES[(i + 2) % len(SERIES)], width=2))
            xs = np.fromiter((p[0] for p in pts), float, len(pts))
            ys = np.fromiter((p[1] for p in pts), float, len(pts))
            self._loss_items[name].setData(xs, ys)


if __name__ == "__main__":  # python -m slimline.gui.step_charts
    import sys

    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv)
    view = StepCharts()

    def lat(p50: float, p50_64: float) -> dict[str, Any]:
        return {str(b): {"p50_ms": v, "p90_ms": v * 1.2, "batch": b, "runs": 50, "input_kind": "dataset"}
                for b, v in ((1, p50), (64, p50_64))}

    acc = lambda a: {"dataset": "digits_eval", "n": 449, "top1": a}  # noqa: E731
    for r in [{"step_id": "original", "size": {"bytes_on_disk": 3.0e6}, "latency": lat(1.0, 20), "accuracy": acc(0.995)},
              {"step_id": "s1", "size": {"bytes_on_disk": 0.8e6}, "latency": lat(0.5, 9), "accuracy": acc(0.98),
               "flags": ["over_budget"], "warnings": ["top-1 drop 1.5 points > budget 1"]},
              {"step_id": "s2", "size": {"bytes_on_disk": 0.3e6}, "latency": lat(0.45, 12), "accuracy": acc(0.978),
               "flags": ["slower"], "warnings": ["slower at batch 64: p50 9.000 → 12.000 ms (1.33×)"]}]:
        view.add_result(r)
    for e in range(10):
        view.add_metric({"step_id": "s2", "kind": "loss", "payload": {"epoch": e, "value": 1 / (e + 1)}})
    view.resize(1000, 600)
    view.show()
    sys.exit(app.exec())
