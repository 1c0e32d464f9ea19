"""The Sensitivity panel: which layers cost the metric, as a ranked bar chart linked to the layer table.

Pick a step (one of the pipeline's, or a step kind to try), Analyze: the engine's analysis runs in a child
process with progress and cancel. Clicking a bar selects that layer in the layer table and its histogram;
double-clicking it (or "Exclude from step") adds it to the step's exclusion list in the pipeline — an
undoable edit like any other (Edit → Undo, or the Undo button here). "Search within budget" runs the
budgeted search for the step; its candidates appear in the Results tab as variants.
The panel holds no engine logic: slimline.gui.sensitivity_controller drives it.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from slimline.gui.rank_chart import Bar, RankChart

SOURCE_WORDS = {"end_metric": "end metric", "output_error": "cheap: output error",
                "weight_error": "cheap: weight error"}


def bars_for(result: Any, excluded: set[str]) -> tuple[list[Bar], str, str]:
    """(bars, caption, unit) of a SensitivityResult: measured rows at their score (or, when the headline metric
    did not move for any layer, at their loss of output fidelity), cheap rows scaled to them, excluded grey."""
    rows = sorted(result.rows, key=lambda r: r.rank)
    measured = [r for r in rows if r.source == "end_metric"]
    what = result.metric.split(" (n=")[0]
    by_fidelity = bool(measured) and all(r.score <= 0 for r in measured)

    def value(r: Any) -> float:
        return max(r.fidelity_score if by_fidelity else r.score, 0.0)

    top_measured = max([value(r) for r in measured] + [0.0])
    cheap = [r for r in rows if r.source != "end_metric"]
    top_cheap = max([r.score for r in cheap] + [0.0])
    scale = (top_measured / top_cheap) if top_measured > 0 and top_cheap > 0 else 1.0
    out = []
    for r in rows:
        kind = "excluded" if r.layer in excluded else ("measured" if r.source == "end_metric" else "cheap")
        label = f"{r.rank}. {r.layer}" + (" (excluded)" if r.layer in excluded else "")
        tip = (f"{r.layer} ({r.tensor}, {r.op}, {r.params:,} values)\n{SOURCE_WORDS.get(r.source, r.source)}: "
               f"{r.score:.4g}; Δ fidelity {r.fidelity_score:.3g}")
        shown = r.fidelity_score if by_fidelity and r.source == "end_metric" else r.score
        text = f"{shown:+.3g}" + ("" if r.source == "end_metric" else " (cheap)")
        out.append(Bar(r.tensor, label, value(r) if r.source == "end_metric" else r.score * scale, kind, tip, text))
    unit = "loss of output fidelity (1 − cosine)" if by_fidelity else f"{what} lost"
    caption = (f"{result.step_title}: {result.ranked_by}. "
               + (f"No layer moved the {what}, so bars show the output fidelity each costs. " if by_fidelity else "")
               + ("Pale bars: cheap score only, scaled to the measured ones." if cheap else ""))
    return out, caption, unit


class SensitivityView(QWidget):
    """Signals carry the chosen step entry's key (a pipeline step id, or '+<plugin id>' for a step kind)."""

    analyze_clicked = Signal(str)
    search_clicked = Signal(str)
    cancel_clicked = Signal()
    exclude_clicked = Signal(str, list)     # step key, [layer names]
    undo_clicked = Signal()
    layer_selected = Signal(str)            # tensor name

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.result: Any = None
        self.excluded: set[str] = set()
        self._picked = False      # the user chose a step in the combo (kept across pipeline edits)
        self._result_key = ""
        self.step_combo = QComboBox()
        self.step_combo.setToolTip("The step whose layers to rank: one of the pipeline's, or a kind to try")
        self.analyze_button = QPushButton("Analyze")
        self.search_button = QPushButton("Search within budget")
        self.search_button.setToolTip("Budgeted search: the most compact per-layer settings within the pipeline's "
                                      "budget; every candidate becomes a variant in Results")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(8)
        self.status = QLabel("Rank the layers by how much changing each one costs the metric on your data.")
        self.status.setWordWrap(True)
        self.chart = RankChart("Sensitivity per layer", "metric lost")
        self.exclude_button = QPushButton("Exclude from the step")
        self.exclude_button.setEnabled(False)
        self.exclude_button.setToolTip("Adds the selected layer to the step's exclusion list (undoable); "
                                       "double-clicking a bar does the same")
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("Undo the last pipeline edit (Edit → Undo)")
        self.step_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.step_combo.setMinimumContentsLength(8)   # long step titles must not widen the window
        self.status.setMinimumWidth(10)
        top = QHBoxLayout()   # two rows: the panel shares the Inspect tab's width with the layer table
        top.addWidget(QLabel("Step:"))
        top.addWidget(self.step_combo, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.analyze_button)
        buttons.addWidget(self.search_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.exclude_button)
        bottom.addWidget(self.undo_button)
        bottom.addStretch(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(top)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addWidget(self.chart, 1)
        lay.addLayout(bottom)
        lay.addWidget(self.status)
        self.step_combo.activated.connect(lambda _i: setattr(self, "_picked", True))
        self.analyze_button.clicked.connect(lambda: self.analyze_clicked.emit(self.step_key()))
        self.search_button.clicked.connect(lambda: self.search_clicked.emit(self.step_key()))
        self.cancel_button.clicked.connect(self.cancel_clicked.emit)
        self.undo_button.clicked.connect(self.undo_clicked.emit)
        self.exclude_button.clicked.connect(self._on_exclude_button_clicked)
        self.chart.bar_clicked.connect(self._on_chart_bar_clicked)
        self.chart.bar_double_clicked.connect(self._on_chart_bar_double_clicked)

    # --- state ---------------------------------------------------------------------------
    def step_key(self) -> str:
        return str(self.step_combo.currentData() or "")

    def set_steps(self, entries: list[tuple[str, str]]) -> None:
        """The entries (pipeline steps first); the choice is kept when it is a pipeline step or the user's."""
        keep = self.step_key() if (self._picked or not self.step_key().startswith("+")) else ""
        self.step_combo.blockSignals(True)
        self.step_combo.clear()
        for key, label in entries:
            self.step_combo.addItem(label, key)
        i = self.step_combo.findData(keep)
        self.step_combo.setCurrentIndex(i if i >= 0 else 0)
        self.step_combo.blockSignals(False)
        self.analyze_button.setEnabled(bool(entries) and not self.cancel_button.isEnabled())

    def select_step(self, key: str) -> None:
        i = self.step_combo.findData(key)
        if i >= 0:
            self.step_combo.setCurrentIndex(i)
            self._picked = True

    def set_running(self, running: bool) -> None:
        self.cancel_button.setEnabled(running)
        self.analyze_button.setEnabled(not running and self.step_combo.count() > 0)
        self.search_button.setEnabled(not running and self.step_combo.count() > 0)
        if not running:
            self.progress.setValue(0)

    def set_progress(self, fraction: float, message: str) -> None:
        self.progress.setValue(int(fraction * 1000))
        self.status.setText(message)

    def set_result(self, result: Any, excluded: set[str] | None = None) -> None:
        self.result = result
        self.excluded = set(excluded or ())
        if result is None:
            self.chart.set_bars([], "")
            self.exclude_button.setEnabled(False)
            return
        bars, caption, unit = bars_for(result, self.excluded)
        self.chart.set_unit(unit)
        self.chart.set_bars(bars, caption)
        cached = " (from the cache)" if result.cached else f" in {result.seconds:.1f} s"
        self.status.setText(f"{len(result.rows)} layers ranked on {result.dataset or 'random inputs'} "
                            f"(n={result.n}){cached}. Click a bar to select the layer; double-click to exclude it.")

    def set_excluded(self, excluded: set[str]) -> None:
        if self.result is not None:
            self.set_result(self.result, excluded)

    def select_tensor(self, tensor: str) -> None:
        """The layer table selected ``tensor``: highlight its bar."""
        self.chart.select(tensor)
        self.exclude_button.setEnabled(self._layer_of(tensor) is not None)

    def _layer_of(self, tensor: str) -> str | None:
        row = self.result.by_tensor().get(tensor) if self.result is not None else None
        return row.layer if row is not None else None

    # --- slots ---------------------------------------------------------------------------
    def _on_chart_bar_clicked(self, tensor: str) -> None:
        self.exclude_button.setEnabled(self._layer_of(tensor) is not None)
        self.layer_selected.emit(tensor)

    def _on_chart_bar_double_clicked(self, tensor: str) -> None:
        self.layer_selected.emit(tensor)
        layer = self._layer_of(tensor)
        if layer is not None:
            self.exclude_clicked.emit(self.result_step_key(), [layer])

    def _on_exclude_button_clicked(self) -> None:
        layer = self._layer_of(self.chart.selected)
        if layer is not None:
            self.exclude_clicked.emit(self.result_step_key(), [layer])

    def result_step_key(self) -> str:
        """The step the shown ranking was made for (exclusions go there, whatever the combo shows now)."""
        return self._result_key or self.step_key()

    def remember_result_step(self, key: str) -> None:
        self._result_key = key
