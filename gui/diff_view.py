"""Compare tab: the before/after diff of any two variants, layer by layer.

Pick A (before) and B (after) from every variant the workspace knows; Compare runs the engine's model diff
(slimline.core.diff) in a child process with progress and cancel: per-layer weight error in real values and,
with the run's evaluation data, the error of each layer's output on the same rows. The table and the ranked
chart are sorted by the largest change; selecting a row or clicking a bar shows both histograms overlaid
(B dashed, int8 weights read back through their scales).
"""
from __future__ import annotations

import functools
import math
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from slimline.gui.histogram_view import HistogramView, HistSeries
from slimline.gui.messages import UserMessage
from slimline.gui.rank_chart import Bar, RankChart
from slimline.gui.results import variant_label
from slimline.gui.task_runner import TaskRunner
from slimline.gui.workers import run_in_thread

HEADERS = ["Tensor (A)", "In B", "Op", "Shape", "Weight error", "Output error", "Status", "Note"]
SORT_ROLE = Qt.ItemDataRole.UserRole + 1


class DiffTableModel(QAbstractTableModel):
    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.rows: list[Any] = []

    def set_rows(self, rows: list[Any]) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        r, col = self.rows[index.row()], index.column()
        values = [r.tensor, r.other, r.op, "×".join(str(d) for d in r.shape), r.weight_error, r.output_error,
                  r.status, r.note]
        v = values[col]
        if role == Qt.ItemDataRole.DisplayRole:
            if col in (4, 5):
                return "—" if v is None else f"{v:.4g}"
            return str(v)
        if role == SORT_ROLE:
            if col in (4, 5):
                return -1.0 if v is None else (v if math.isfinite(v) else 1e300)
            return str(v)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (4, 5):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class DiffView(QWidget):
    """Emits ``message(UserMessage)`` for the window's banner; ``diff_ready(ModelDiff)`` when a diff arrived."""

    message = Signal(object)
    diff_ready = Signal(object)
    histograms_updated = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.variants: list[Any] = []
        self.diff: Any = None
        self.pair: tuple[Any, Any] | None = None
        self.data_path: str | None = None
        self._hist_gen = 0
        self._pending = 0
        self.runner = TaskRunner(self)
        self.a_combo, self.b_combo = QComboBox(), QComboBox()
        for c in (self.a_combo, self.b_combo):
            c.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            c.setMinimumContentsLength(16)  # long run names elide: the window must fit an 800 px screen
        self.compare_button = QPushButton("Compare")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setMaximumHeight(8)
        self.progress.setTextVisible(False)
        self.status = QLabel("Pick two variants (A before, B after) and Compare: per-layer weight error, and with "
                             "the run's data the error at each layer's output.")
        self.status.setWordWrap(True)
        self.model = DiffTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.chart = RankChart("Largest changes per layer", "relative error")
        self.histogram = HistogramView()
        bar = QHBoxLayout()
        bar.addWidget(QLabel("A (before):"))
        bar.addWidget(self.a_combo, 1)
        bar.addWidget(QLabel("B (after):"))
        bar.addWidget(self.b_combo, 1)
        bar.addWidget(self.compare_button)
        bar.addWidget(self.cancel_button)
        self.status.setMinimumWidth(10)
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.chart)
        left.addWidget(self.table)
        main = QSplitter(Qt.Orientation.Horizontal)
        main.addWidget(left)
        main.addWidget(self.histogram)
        main.setStretchFactor(0, 3)
        main.setStretchFactor(1, 2)
        lay = QVBoxLayout(self)
        lay.addLayout(bar)
        lay.addWidget(self.progress)
        lay.addWidget(main, 1)
        lay.addWidget(self.status)
        self.compare_button.clicked.connect(self.compare)
        self.cancel_button.clicked.connect(self.runner.cancel)
        self.runner.progress.connect(self._on_runner_progress)
        self.runner.running_changed.connect(self._on_runner_running_changed)
        self.runner.done.connect(self._on_runner_done)
        self.runner.failed.connect(self._on_runner_failed)
        self.runner.cancelled.connect(lambda: self.status.setText("Cancelled."))
        self.chart.bar_clicked.connect(self.select_tensor)
        self.table.selectionModel().selectionChanged.connect(self._on_table_selection_changed)

    # --- variants ------------------------------------------------------------------------
    def set_variants(self, variants: list[Any]) -> None:
        """Every variant with a model file; A defaults to an original, B to the newest variant."""
        keep = (self.a_combo.currentData(), self.b_combo.currentData())
        self.variants = [v for v in variants if v.handle.path]
        for combo in (self.a_combo, self.b_combo):
            combo.blockSignals(True)
            combo.clear()
            for v in self.variants:
                combo.addItem(f"{v.run_id} · {variant_label(v)}", v.key)
            combo.blockSignals(False)
        if not self.variants:
            return
        orig = next((v.key for v in reversed(self.variants) if v.step_id == "original"), self.variants[0].key)
        self.choose(keep[0] or orig, keep[1] or self.variants[-1].key)

    def choose(self, a_key: str, b_key: str) -> None:
        for combo, key in ((self.a_combo, a_key), (self.b_combo, b_key)):
            i = combo.findData(key)
            if i >= 0:
                combo.setCurrentIndex(i)

    def _variant(self, combo: QComboBox) -> Any:
        key = combo.currentData()
        return next((v for v in self.variants if v.key == key), None)

    # --- the diff ------------------------------------------------------------------------
    def compare(self, data_path: str | None = None) -> None:
        a, b = self._variant(self.a_combo), self._variant(self.b_combo)
        if a is None or b is None:
            self.message.emit(UserMessage("pick two variants", "run a pipeline or a search first", level="info"))
            return
        from slimline.core.diff import start_diff

        data = data_path or (b.run.data.eval if b.run is not None else None) or \
            (a.run.data.eval if a.run is not None else None)
        self.pair, self.data_path = (a, b), data
        self.status.setText(f"Comparing {variant_label(a)} with {variant_label(b)}…")
        self.runner.start(functools.partial(start_diff, a.handle, b.handle, data))

    def _on_runner_progress(self, f: float, m: str) -> None:
        self.progress.setValue(int(f * 1000))
        self.status.setText(m)

    def _on_runner_running_changed(self, running: bool) -> None:
        self.compare_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if not running:
            self.progress.setValue(0)

    def _on_runner_failed(self, msg: UserMessage) -> None:
        self.status.setText(f"Failed: {msg.message}")
        self.message.emit(msg)

    def _on_runner_done(self, doc: dict[str, Any]) -> None:
        from slimline.core.diff import ModelDiff

        self.set_diff(ModelDiff.model_validate(doc))

    def set_diff(self, diff: Any) -> None:
        self.diff = diff
        self.model.set_rows(diff.rows)
        self.table.sortByColumn(5 if diff.dataset else 4, Qt.SortOrder.DescendingOrder)
        self.table.resizeColumnsToContents()
        by_output = bool(diff.dataset)
        bars = []
        for r in diff.rows:
            value = r.output_error if by_output and r.output_error is not None else r.weight_error
            if value is None or not math.isfinite(value):
                continue
            bars.append(Bar(r.tensor, r.tensor, value, "measured" if r.status != "same" else "excluded",
                            f"{r.tensor} → {r.other or '—'}: weight {r.weight_error}, output {r.output_error}"))
        bars.sort(key=lambda b: -b.value)
        what = "output error on the data" if by_output else "weight error"
        self.chart.set_unit(f"relative {what}")
        self.chart.set_bars(bars, f"Sorted by relative {what}" + (
            f" ({diff.dataset}, n={diff.n}); a layer's output error includes what the layers before it changed"
            if by_output else " (no data: weights only)") + ". Grey: weights unchanged.")
        changed = sum(1 for r in diff.rows if r.status != "same")
        odd = [r for r in diff.rows if r.status in ("missing", "reshaped")]
        self.status.setText(f"{changed} of {len(diff.rows)} weight tensors differ"
                            + (f"; {len(odd)} removed or reshaped" if odd else "") + f" ({diff.seconds:.1f} s). "
                            + " ".join(diff.notes))
        self.diff_ready.emit(diff)
        if bars:
            self.select_tensor(bars[0].key)

    # --- histograms ----------------------------------------------------------------------
    def select_tensor(self, tensor: str) -> None:
        """Select ``tensor``'s row and bar, and overlay its histograms (A solid, B dashed)."""
        self.chart.select(tensor)
        row = next((i for i, r in enumerate(self.model.rows) if r.tensor == tensor), -1)
        if row >= 0:
            idx = self.proxy.mapFromSource(self.model.index(row, 0))
            if self.table.currentIndex().row() != idx.row():
                self.table.selectRow(idx.row())
                return
        self._histograms(tensor)

    def _on_table_selection_changed(self, *_: Any) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            tensor = self.model.rows[self.proxy.mapToSource(rows[0]).row()].tensor
            self.chart.select(tensor)
            self._histograms(tensor)

    def _histograms(self, tensor: str) -> None:
        from slimline.gui.inspector import _after_histogram, _histogram

        if self.pair is None:
            return
        a, b = self.pair
        row = next((r for r in self.model.rows if r.tensor == tensor), None)
        self._hist_gen += 1
        gen = self._hist_gen
        self.histogram.set_series([])
        jobs = [(a.handle, "before", _histogram)]
        if row is not None and row.status in ("changed", "same"):
            jobs.append((b.handle, "after", _after_histogram))
        self._pending = len(jobs)
        for handle, role, fn in jobs:
            run_in_thread(fn, handle, tensor, None,
                          on_done=functools.partial(self._on_hist, gen, tensor, role),
                          on_error=functools.partial(self._on_hist_error, gen))

    def _on_hist(self, gen: int, tensor: str, role: str, hist: Any) -> None:
        if gen != self._hist_gen:
            return
        self.histogram.add_series(HistSeries.from_engine(tensor, hist, role))
        self._hist_done()

    def _on_hist_error(self, gen: int, exc: BaseException, _tb: str) -> None:
        if gen == self._hist_gen:
            self.histogram.caption.setText(f"No histogram: {getattr(exc, 'message', exc)}")
            self._hist_done()

    def _hist_done(self) -> None:
        self._pending -= 1
        if self._pending <= 0:
            self.histograms_updated.emit()


def attach(win: Any) -> DiffView:
    """Add the Compare tab to the window and keep its variant lists in step with the session's runs."""
    view = DiffView()
    win.tabs.addTab(view, "Compare")
    view.message.connect(win.show_message)
    win.session.runs_changed.connect(lambda: view.set_variants(win.session.variants()))
    view.set_variants(win.session.variants())
    return view
