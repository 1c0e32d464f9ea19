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

import html
import re
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QComboBox, QFrame, QGridLayout, QHBoxLayout, QLabel, QScrollArea, QSizePolicy, QWidget

from slimline.core.lm.render import CHANGE_WHISKER, change_interval
from slimline.core.results import MetricEvent, StepResult
from slimline.gui.results import latency_batches, latency_report, noise_reasons, quality, split_flags, task_line
from slimline.gui.step_plot import StepPlot
from slimline.gui.theme import OTHER_FLAG_COLOR, SERIES, cache_axes, flag_text, muted_text

FLAG_FOR = {"size": {"bigger"}, "latency": {"slower"}, "quality": {"over_budget"}}
STAGE_MS = 30          # gap between redrawing one chart and the next
LOSS_REDRAW_MS = 250   # live loss curve: at most 4 redraws a second
_SLOWER_AT = re.compile(r"slower at batch (\d+)")


def slower_batches(result: StepResult) -> set[int] | None:
    """Batches the "slower" flag concerns (from the engine's reasons); None = not said (all)."""
    if "slower" not in result.flags:
        return set()
    found = {int(m.group(1)) for w in result.warnings for m in [_SLOWER_AT.search(w)] if m}
    return found or None


class StepCharts(QWidget):
    """Three per-step charts and a live loss curve. ``batch_changed(int)`` when the user picks a batch."""

    batch_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        import pyqtgraph as pg

        self.results: list[StepResult] = []
        self.loss: dict[str, list[tuple[float, float]]] = {}
        self.batch: int | None = None
        self.size_chart = StepPlot("Size on disk (MB)", bars=True)
        self.lat_chart = StepPlot("Latency p50 (ms), whisker to p90", whiskers=True)
        self.acc_chart = StepPlot("Accuracy", whiskers=True)   # whiskers: a perplexity's 95 % interval
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
        # what the run took the model to be, and so how fidelity is judged (the engine's guess and why)
        self.task_label = QLabel("")
        self.task_label.setObjectName("taskLine")
        self.task_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.task_label.setTextFormat(Qt.TextFormat.PlainText)
        self.task_label.hide()
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.note.setTextFormat(Qt.TextFormat.RichText)
        self.note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # a fixed-height, scrollable strip: flags arriving must not re-lay out (and repaint) all charts
        self.note_area = QScrollArea()
        self.note_area.setWidgetResizable(True)
        self.note_area.setFrameShape(QFrame.Shape.NoFrame)
        self.note_area.setWidget(self.note)
        self.note_area.setFixedHeight(self.fontMetrics().lineSpacing() * 4 + 6)
        bar = QHBoxLayout()
        bar.addWidget(self.task_label, 1)
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
    def show_training(self, on: bool) -> None:
        """The live loss chart only for runs with a training step; else the quality chart takes its place."""
        lay = self.layout()
        assert isinstance(lay, QGridLayout)
        lay.removeWidget(self.acc_plot)
        lay.addWidget(self.acc_plot, 2, 0, 1, 1 if on else 2)
        self.loss_plot.setVisible(on)

    def clear(self) -> None:
        self.results = []
        self.loss = {}
        self.batch = None
        self._fill_batches()
        self._schedule()
        self.flush()
        self._redraw_loss()

    def add_result(self, result: StepResult) -> None:
        self.results = [r for r in self.results if r.step_id != result.step_id] + [result]
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

    def add_metric(self, event: MetricEvent) -> None:
        self.add_metrics([event])

    def add_metrics(self, events: list[MetricEvent]) -> None:
        """Append loss points (``metric`` events of kind "loss"); the curve redraws on a timer."""
        added = False
        for event in events:
            if event.kind != "loss":
                continue
            p = event.payload
            value = p.get("value", p.get("loss"))
            if value is None:
                continue
            x = p.get("step", p.get("x"))
            self._loss_unit = "training step (batch)" if x is not None else "epoch"
            if x is None:
                epoch, batch, nb = p.get("epoch", 0), p.get("batch"), p.get("batches")
                x = float(epoch) + (float(batch) / float(nb) if batch is not None and nb else 0.0)
            series = str(p.get("series") or p.get("name") or f"{event.step_id} train loss").strip()
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
        return [r.step_id for r in self.results]

    def _flagged(self, key: str) -> list[bool]:
        return [bool(set(r.flags) & FLAG_FOR[key]) for r in self.results]

    def _flag_notes(self, key: str) -> list[tuple[str, str]]:
        out = []
        for r, hit in zip(self.results, self._flagged(key)):
            flags = [f for f in r.flags if f in FLAG_FOR[key]]
            out.append(("⚑ " + ", ".join(flags).replace("_", " "), flag_text()) if hit else ("", ""))
        return out

    def _draw(self, key: str) -> None:
        labels = self._labels()
        if key == "size":
            sizes: list[float | None] = [r.size.bytes_on_disk / 1e6 for r in self.results]
            self.series_points["size"] = self.size_chart.update(sizes, labels, self._flagged("size"),
                                                                self._flag_notes("size"))
        elif key == "latency":
            self._draw_latency(labels)
        elif key == "quality":
            qs = [quality(r) for r in self.results]
            lms = [r.lm for r in self.results]
            spans = [change_interval(lm) for lm in lms]
            lows = [sp[0] if sp else None for sp in spans]
            highs = [sp[1] if sp else None for sp in spans]
            self.series_points["quality"] = self.acc_chart.update([q.value for q in qs], labels,
                                                                  self._flagged("quality"), self._flag_notes("quality"),
                                                                  tops=highs, bottoms=lows)
            named = next((q for q in qs if q.value is not None), None)
            self.acc_plot.setTitle(named.label if named else "Accuracy (no evaluation data)")
            if any(sp for sp in spans):
                self.acc_plot.setLabel("bottom", CHANGE_WHISKER)
            else:
                self.acc_plot.getAxis("bottom").showLabel(False)
        else:
            self._draw_notes()

    def _draw_notes(self) -> None:
        """Failures in the flag colour; a noisy timing (a caveat, not a failure) muted, its reasons in the tooltip."""
        lines, noisy_tips, noisy = [], [], []
        for r in self.results:
            bad, neutral = split_flags(list(r.flags))
            if bad:
                why = [w for w in r.warnings if "noisy" not in w] or bad
                lines.append(f"<span style='color:{flag_text()}'>⚑ {html.escape(r.step_id)}: "
                             f"{html.escape('; '.join(why))}</span>")
            if neutral:
                reasons = noise_reasons(r, list(r.warnings))
                noisy.append(r.step_id)
                noisy_tips.append(f"{r.step_id}: " + ("; ".join(reasons) or "noisy timing"))
        if noisy:  # one line for all: a busy machine made every step noisy, and the flags must stay in view
            what = "decode speed" if any(r.lm is not None for r in self.results) else "latency"
            lines.append(f"<span style='color:{muted_text()}'>~ {html.escape(', '.join(noisy))}: {what} noisy "
                         "(the machine was busy; hover for why), no faster/slower conclusion</span>")
        self.note.setText("<br>".join(lines))
        self.note.setToolTip("\n".join(noisy_tips))
        text, tip = task_line(self.results)
        self.task_label.setText(text)
        self.task_label.setToolTip(tip + ("\n\n" + text if text else ""))
        self.task_label.setVisible(bool(text))

    def _draw_latency(self, labels: list[str]) -> None:
        if any(r.lm is not None for r in self.results):
            self._draw_decode(labels)
            return
        batch = self.batch
        reps = [latency_report(r, batch) for r in self.results]
        p50 = [rep.p50_ms if rep else None for rep in reps]
        p90 = [rep.p90_ms if rep else None for rep in reps]
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
            acc = next((r.accuracy for r in self.results if r.accuracy is not None), None)
            name = (rep0.dataset or (acc.dataset if acc is not None else "") or "evaluation data").split(" (")[0]
            kind = "RANDOM inputs" if rep0.input_kind == "random" else f"inputs: {name}"
            self.lat_plot.setTitle(f"Latency p50 (ms), whisker to p90 — batch {rep0.batch}, {rep0.runs} runs, {kind}")
        else:
            self.lat_plot.setTitle("Latency p50 (ms), whisker to p90")

    def _draw_decode(self, labels: list[str]) -> None:
        """A language model: decode tokens/s per step (median over prompts, whisker to the fastest prompt)."""
        gens = [r.lm.generation if r.lm is not None else None for r in self.results]
        med = [g.decode_tokens_per_s if g else None for g in gens]
        tops = [g.decode_tokens_per_s_max if g else None for g in gens]
        flagged = ["slower" in r.flags for r in self.results]
        notes = [("⚑ slower", flag_text()) if f else (("no KV cache", OTHER_FLAG_COLOR) if g and not g.kv_cache
                                                      else ("", "")) for f, g in zip(flagged, gens)]
        self.series_points["latency"] = self.lat_chart.update(med, labels, flagged, notes, tops=tops)
        g0 = next((g for g in gens if g), None)
        threads = f"{g0.threads} thread{'s' if g0 and g0.threads != 1 else ''}" if g0 else ""
        self.lat_plot.setTitle(f"Decode tokens/s (median of {len(g0.samples)} prompts, whisker to the fastest), "
                               f"{threads}" if g0 else "Decode tokens/s")

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
