"""Variants: every model every run produced, as a table and size/latency-vs-accuracy scatters.

The Pareto front (nothing else is both smaller/faster and more accurate) is
drawn as a line through highlighted points, because that is the shortlist a
user actually chooses from. Clicking a point or a row selects the variant for
inspection and export. A model filter (default: the open model) keeps each
chart to one model's variants: a Pareto front across different models means nothing.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from slimline.core.export.variants import Variant, variants_of
from slimline.core.results import RunRecord
from slimline.gui.layer_table import fmt_bytes
from slimline.gui.results import (
    decode_ms,
    latency_ms,
    pareto_front,
    quality,
    run_model,
    size_bytes,
    speed_cells,
    split_flags,
)
from slimline.gui.theme import FLAG_COLOR, OK_COLOR, SERIES, cache_axes, flag_text, muted_text

HEADERS = ["Run", "Step", "Title", "Size", "p50", "p90", "Quality", "Flags", "Status"]
# language models only: the same columns hold decode speed, prefill and perplexity (the cells say their units)
LM_HEADERS = ["Run", "Step", "Title", "Size", "Decode", "Prefill", "Perplexity", "Flags", "Status"]


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def chosen(v: Variant) -> bool:
    """The candidate a budgeted search chose (slimline.core.search): drawn as a star, said in the table."""
    return bool(v.step is not None and v.step.metrics.get("search_chosen"))


class VariantTableModel(QAbstractTableModel):
    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.variants: list[Variant] = []
        self.pareto_keys: set[str] = set()
        self.lm_only = False

    def set_variants(self, variants: list[Variant], pareto_keys: set[str], lm_only: bool = False) -> None:
        self.beginResetModel()
        self.variants = list(variants)
        self.pareto_keys = set(pareto_keys)
        self.lm_only = lm_only
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.variants)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return (LM_HEADERS if self.lm_only else HEADERS)[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        v = self.variants[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            q = quality(v.step)
            size = size_bytes(v.step)
            status = v.run.status if v.run is not None else ""
            return [v.run_id, v.step_id, v.title, "—" if size is None else fmt_bytes(size),
                    *speed_cells(v.step),
                    q.text(), ", ".join(v.flags),
                    status + (" · Pareto" if v.key in self.pareto_keys else "")
                    + (" · ★ chosen by search" if chosen(v) else "")][col]
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == 0 and v.run is not None:  # the pipeline as run (a sweep's variant names its settings)
                return v.run.pipeline_name
            tips = [quality(v.step).label] + (list(v.step.warnings) if v.step is not None else [])
            return "\n".join(tips)
        if role == Qt.ItemDataRole.ForegroundRole and col == 7 and v.flags:
            return QColor(flag_text() if split_flags(list(v.flags))[0] else muted_text())
        if role == Qt.ItemDataRole.BackgroundRole and v.key in self.pareto_keys:
            return QColor(44, 160, 44, 45)
        return None


class VariantsView(QWidget):
    """Emits ``variant_selected(Variant)`` and ``export_requested(Variant)``."""

    variant_selected = Signal(object)
    export_requested = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        import pyqtgraph as pg

        self.runs: dict[str, RunRecord] = {}
        self._run_models: dict[str, tuple[str, str]] = {}  # run id -> results.run_model(run)
        self.variants: list[Variant] = []      # the variants shown (after the model filter)
        self.selected: Variant | None = None
        self.model_filter = ""                 # a results.model_key(); "" = all models
        self._model_names: dict[str, str] = {}
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("Show the variants of one model (one Pareto front per model)")
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.model = VariantTableModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.size_plot = pg.PlotWidget(title="Size vs quality")
        self.size_plot.setLabel("bottom", "size on disk (MB)")
        self.lat_plot = pg.PlotWidget(title="Latency p50 vs quality")
        self.lat_plot.setLabel("bottom", "p50 latency (ms)")
        cache_axes(self.size_plot)
        cache_axes(self.lat_plot)
        self.scatters: dict[str, Any] = {}
        for key, plot in (("size", self.size_plot), ("latency", self.lat_plot)):
            sc = pg.ScatterPlotItem(size=12, hoverable=True)
            sc.sigClicked.connect(self._on_scatter_clicked)
            plot.addItem(sc)
            self.scatters[key] = sc
        self.front_lines = {k: pg.PlotCurveItem(pen=pg.mkPen(OK_COLOR, width=2, style=Qt.PenStyle.DashLine))
                            for k in self.scatters}
        self.size_plot.addItem(self.front_lines["size"])
        self.lat_plot.addItem(self.front_lines["latency"])
        self.sel_marker = {k: pg.ScatterPlotItem(size=22, brush=None, pen=pg.mkPen(SERIES[4], width=3))
                           for k in self.scatters}
        self.size_plot.addItem(self.sel_marker["size"])
        self.lat_plot.addItem(self.sel_marker["latency"])
        self.info = QLabel("Run a pipeline: every step of every run appears here as a variant.")
        self.info.setWordWrap(True)
        self.export_button = QPushButton("Export selected…")
        self.export_button.setEnabled(False)
        self.inspect_button = QPushButton("Compare histograms in Inspect")
        self.inspect_button.setEnabled(False)
        self.size_combo = QComboBox()   # zeros only pay once compressed: magnitude pruning compares zip sizes
        self.size_combo.addItem("size on disk", "disk")
        self.size_combo.addItem("zip-compressed size", "zip")
        self.size_combo.setToolTip("The size axis: bytes on disk, or zip-compressed (where unstructured sparsity pays)")
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Model:"))
        bar.addWidget(self.model_combo)
        bar.addWidget(self.size_combo)
        bar.addWidget(self.info, 1)
        bar.addWidget(self.inspect_button)
        bar.addWidget(self.export_button)
        charts = QSplitter(Qt.Orientation.Horizontal)
        charts.addWidget(self.size_plot)
        charts.addWidget(self.lat_plot)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(charts)
        split.addWidget(self.table)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split, 1)
        lay.addLayout(bar)
        self.table.selectionModel().selectionChanged.connect(self._on_table_selection_changed)
        self.export_button.clicked.connect(self._on_export_button_clicked)
        self.model_combo.currentIndexChanged.connect(self._on_model_combo_changed)
        self.size_combo.currentIndexChanged.connect(self._on_size_combo_changed)
        self._fill_models()

    # --- data --------------------------------------------------------------------------
    def set_runs(self, runs: list[RunRecord]) -> None:
        self.runs = {r.run_id: r for r in runs}
        self._run_models = {r.run_id: run_model(r) for r in runs}
        self._fill_models()
        self._refresh()

    def add_run(self, run: RunRecord) -> None:
        self.runs[run.run_id] = run
        self._run_models[run.run_id] = run_model(run)
        self._fill_models()
        self._refresh()

    def set_model_filter(self, key: str, name: str = "") -> None:
        """Show only the runs of model ``key`` ("" = all); ``name`` labels a model with no runs yet."""
        if key and name:
            self._model_names[key] = name
        self.model_filter = key
        self._fill_models()
        self._refresh()

    def _fill_models(self) -> None:
        counts: dict[str, int] = {}
        for key, name in (self._run_models[rid] for rid in self.runs):
            if key:
                counts[key] = counts.get(key, 0) + 1
                self._model_names.setdefault(key, name or key)
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItem(f"All models ({_runs(len(self.runs))})", "")
        for key in sorted(set(counts) | ({self.model_filter} - {""}), key=lambda k: self._model_names.get(k, k)):
            self.model_combo.addItem(f"{self._model_names.get(key, key)} ({_runs(counts.get(key, 0))})", key)
            self.model_combo.setItemData(self.model_combo.count() - 1, key, Qt.ItemDataRole.ToolTipRole)
        self.model_combo.setCurrentIndex(max(0, self.model_combo.findData(self.model_filter)))
        self.model_combo.blockSignals(False)

    def _on_size_combo_changed(self, _i: int) -> None:
        self.size_plot.setLabel("bottom", "zip-compressed size (MB)" if self.size_combo.currentData() == "zip"
                                else "size on disk (MB)")
        self._refresh()

    def _on_model_combo_changed(self, _i: int) -> None:
        self.model_filter = str(self.model_combo.currentData() or "")
        self._refresh()

    def shown_runs(self) -> list[RunRecord]:
        """The runs of the filtered model (a record that names no model cannot be filtered out)."""
        return [r for r in self.runs.values()
                if not self.model_filter or self._run_models[r.run_id][0] in (self.model_filter, "")]

    def variant(self, key: str) -> Variant | None:
        return next((v for v in self.variants if v.key == key), None)

    def _refresh(self) -> None:
        keep = self.selected.key if self.selected else ""
        runs = self.shown_runs()
        self.variants = [v for r in runs for v in variants_of(r)]
        front_keys: set[str] = set()
        qs = [quality(v.step) for v in self.variants]
        higher = all(q.higher_is_better for q in qs if q.value is not None)  # perplexity: lower is better
        for key in ("size", "latency"):
            pts, idx = self._points(key)
            front = pareto_front(pts, higher)
            front_keys |= {self.variants[idx[i]].key for i in front}
            self._draw_scatter(key, pts, idx, set(front))
        lm_only = bool(qs) and all(q.kind == "perplexity" for q in qs)  # language models: time per generated token
        self.model.set_variants(self.variants, front_keys, lm_only)
        self.pareto_keys = front_keys
        qlabels = {q.label for q in qs if q.value is not None}
        mixed = "quality (top-1 or fidelity, see table)" if qlabels else "quality"
        ylabel = qlabels.pop() if len(qlabels) == 1 else mixed
        for plot in (self.size_plot, self.lat_plot):
            plot.setLabel("left", ylabel)
        self.lat_plot.setLabel("bottom", "decode ms per token (median over prompts)" if lm_only else "p50 latency (ms)")
        self.lat_plot.setTitle("Decode time per token vs perplexity" if lm_only else "Latency p50 vs quality")
        self.size_plot.setTitle("Size vs perplexity" if lm_only else "Size vs quality")
        n = len(self.variants)
        self.info.setText(f"{n} variants from {len(runs)} runs; Pareto front (green): {len(front_keys)}. "
                          "Click a point or a row to select a variant." if n else
                          "Run a pipeline: every step of every run appears here as a variant.")
        self.table.resizeColumnsToContents()
        if keep and self.variant(keep):
            self.select(keep)
        elif keep:  # filtered out: nothing hidden stays selected
            self.selected = None
            self.export_button.setEnabled(False)
            self.inspect_button.setEnabled(False)
            for marker in self.sel_marker.values():
                marker.setData([])

    def _points(self, key: str) -> tuple[list[tuple[float, float]], list[int]]:
        pts, idx = [], []
        zipped = self.size_combo.currentData() == "zip"
        for i, v in enumerate(self.variants):
            size = (v.step.size.zip_bytes if v.step is not None else None) if zipped else size_bytes(v.step)
            x = (size / 1e6 if size is not None else None) if key == "size" else (
                latency_ms(v.step) if latency_ms(v.step) is not None else decode_ms(v.step))
            y = quality(v.step).value
            if x is not None and y is not None:
                pts.append((float(x), float(y)))
                idx.append(i)
        return pts, idx

    def _draw_scatter(self, key: str, pts: list[tuple[float, float]], idx: list[int], front: set[int]) -> None:
        import pyqtgraph as pg

        spots = []
        for j, ((x, y), i) in enumerate(zip(pts, idx)):
            v = self.variants[i]
            color = OK_COLOR if j in front else (FLAG_COLOR if split_flags(list(v.flags))[0] else "#999999")
            spots.append({"pos": (x, y), "data": v.key, "brush": pg.mkBrush(color),
                          "symbol": "s" if v.step_id == "original" else ("star" if chosen(v) else "o"),
                          "size": 18 if chosen(v) else 12})
        sc = self.scatters[key]
        sc.setData(spots, tip=lambda x, y, data: f"{data}\n({x:.4g}, {y:.4f})")
        fp = sorted(pts[j] for j in front)
        self.front_lines[key].setData([p[0] for p in fp], [p[1] for p in fp])

    # --- selection ---------------------------------------------------------------------
    def select(self, key: str) -> None:
        v = self.variant(key)
        if v is None:
            return
        row = self.variants.index(v)
        if self.table.selectionModel().selectedRows() != [self.model.index(row, 0)]:
            self.table.selectRow(row)  # → _on_table_selection_changed
            return
        self._set_selected(v)

    def click_point(self, key: str, variant_key: str) -> None:
        """Same as clicking that variant's point in the ``key`` scatter (tests, keyboard)."""
        sc = self.scatters[key]
        pts = [p for p in sc.points() if p.data() == variant_key]
        if pts:
            self._on_scatter_clicked(sc, pts)

    def _set_selected(self, v: Variant) -> None:
        self.selected = v
        for key, marker in self.sel_marker.items():
            pts, idx = self._points(key)
            i = self.variants.index(v)
            marker.setData([{"pos": pts[idx.index(i)]}] if i in idx else [])
        self.export_button.setEnabled(True)
        self.inspect_button.setEnabled(bool(v.handle.path))
        self.variant_selected.emit(v)

    def _on_scatter_clicked(self, _item: Any, points: Any, *_: Any) -> None:
        if len(points):
            self.select(points[0].data())

    def _on_table_selection_changed(self, *_: Any) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            self._set_selected(self.variants[rows[0].row()])

    def _on_export_button_clicked(self) -> None:
        if self.selected is not None:
            self.export_requested.emit(self.selected)
