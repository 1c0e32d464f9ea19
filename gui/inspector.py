"""Inspector: summary, layer table, histograms and the depth overview for one model.

All engine calls (inventory, stats, histograms) run on the thread pool; results
for a model that is no longer shown are dropped (generation counter), so fast
clicking never shows stale numbers.
"""
from __future__ import annotations

import functools
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QSplitter, QTabWidget, QVBoxLayout, QWidget

from slimline.gui.histogram_view import HistogramView, HistSeries
from slimline.gui.layer_table import LayerTableView
from slimline.gui.messages import UserMessage, describe_exception
from slimline.gui.overview_chart import OverviewChart
from slimline.gui.sensitivity_view import SensitivityView
from slimline.gui.summary_view import SummaryView
from slimline.gui.theme import warn_text
from slimline.gui.workers import run_in_thread

MAX_OVERLAY = 6
SAMPLE_ABOVE = 1_000_000   # tensors bigger than this get a sampled histogram first
SAMPLE_SIZE = 200_000


class InspectorView(QWidget):
    """Signals: ``stats_ready`` when all stats arrived, ``failed(UserMessage)`` on engine errors."""

    stats_ready = Signal()
    histograms_updated = Signal()
    failed = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.handle: Any = None
        self.variant: Any = None          # handle of a pipeline result, for before/after overlays
        self.variant_label = ""
        self._gen = 0
        self._hist_gen = 0
        self._pending_hist = 0
        self._missing: list[str] = []   # selected layers the overlaid variant has no tensor for
        self.summary = SummaryView()
        self.layers = LayerTableView()
        self.histogram = HistogramView()
        self.overview = OverviewChart()
        self.status = QLabel("")
        # a layer the variant has no tensor for (pruned away, renamed): said above the histogram, not only below
        self.no_counterpart = QLabel("")
        self.no_counterpart.setWordWrap(True)
        self.no_counterpart.setStyleSheet(f"color: {warn_text()}; font-weight: bold;")
        self.no_counterpart.hide()
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.summary)
        left.addWidget(self.layers)
        left.setStretchFactor(1, 3)
        right = QSplitter(Qt.Orientation.Vertical)
        hist_box = QWidget()
        hist_lay = QVBoxLayout(hist_box)
        hist_lay.setContentsMargins(0, 0, 0, 0)
        hist_lay.addWidget(self.no_counterpart)
        hist_lay.addWidget(self.histogram, 1)
        right.addWidget(hist_box)
        self.sensitivity = SensitivityView()
        self.lower_tabs = QTabWidget()
        self.lower_tabs.addTab(self.overview, "Depth overview")
        self.lower_tabs.addTab(self.sensitivity, "Sensitivity")
        right.addWidget(self.lower_tabs)
        main = QSplitter(Qt.Orientation.Horizontal)
        main.addWidget(left)
        main.addWidget(right)
        main.setStretchFactor(0, 3)
        main.setStretchFactor(1, 2)
        lay = QVBoxLayout(self)
        lay.addWidget(main, 1)
        lay.addWidget(self.status)
        self.layers.selection_changed.connect(self._on_layers_selection_changed)
        self.overview.layer_clicked.connect(self._on_overview_layer_clicked)
        self.sensitivity.layer_selected.connect(self._on_overview_layer_clicked)

    # --- public ------------------------------------------------------------------------
    def set_handle(self, handle: Any, rows: list[Any] | None = None) -> None:
        """Show a model; ``rows`` (from layer_inventory) may come precomputed by the opener."""
        self._gen += 1
        self.handle = handle
        self.variant = None
        self.summary.set_handle(handle)
        self.histogram.clear()
        self.layers.model.set_sensitivity({})
        if rows is None:
            self.layers.set_rows([])
            gen = self._gen
            run_in_thread(_inventory, handle, on_done=lambda r: self._on_inventory_done(gen, r),
                          on_error=lambda e, tb: self._on_engine_error(gen, e, tb))
        else:
            self._on_inventory_done(self._gen, rows)

    def set_variant(self, handle: Any, label: str) -> None:
        """Overlay this variant's histograms (dashed) for the selected layers."""
        self.variant, self.variant_label = handle, label
        self._request_histograms(self.layers.selected_names())

    def select_layers(self, names: list[str]) -> None:
        if names:
            self.layers.select_name(names[0])

    # --- engine callbacks --------------------------------------------------------------
    def _on_inventory_done(self, gen: int, rows: list[Any]) -> None:
        if gen != self._gen:
            return
        rows = depth_order(self.handle, rows)
        self.layers.set_rows(rows)
        self.overview.set_rows(rows)
        self.status.setText(f"{len(rows)} weight tensors — computing statistics…")
        run_in_thread(_stats, self.handle, on_done=lambda r: self._on_stats_done(gen, r),
                      on_error=lambda e, tb: self._on_engine_error(gen, e, tb))
        if rows:
            first = max(rows, key=lambda r: _get(r, "params") or 0)
            self.layers.select_name(str(_get(first, "name")))

    def _on_stats_done(self, gen: int, rows: list[Any]) -> None:
        if gen != self._gen:
            return
        rows = depth_order(self.handle, rows)
        self.layers.update_stats(rows)
        self.overview.set_rows(rows)
        self.status.setText(f"{len(rows)} weight tensors, statistics exact over all values.")
        self.stats_ready.emit()

    def _on_engine_error(self, gen: int, exc: BaseException, tb: str) -> None:
        if gen != self._gen:
            return
        msg = describe_exception(exc, tb=tb)
        self.status.setText(f"Statistics failed: {msg.message}")
        self.failed.emit(msg)

    # --- histograms --------------------------------------------------------------------
    def _on_layers_selection_changed(self, names: list[str]) -> None:
        if names:
            self.overview.mark(names[0])
            self.sensitivity.select_tensor(names[0])
        self._request_histograms(names)

    def show_sensitivity(self, result: Any) -> None:
        """A sensitivity ranking arrived: fill the layer table's column (the panel draws its own chart)."""
        self.layers.model.set_sensitivity(result.by_tensor() if result is not None else {})

    def _on_overview_layer_clicked(self, name: str) -> None:
        self.layers.select_name(name)

    def _request_histograms(self, names: list[str]) -> None:
        self._hist_gen += 1
        hgen, gen = self._hist_gen, self._gen
        names = names[:MAX_OVERLAY]
        if not names or self.handle is None:
            self.histogram.clear()
            return
        self.histogram.set_series([])
        self.histogram.caption.setText("Computing histogram…")
        self._missing = []
        self.no_counterpart.hide()
        sizes = {str(_get(r, "name")): int(_get(r, "params") or 0) for r in self.layers.model.rows()}
        jobs: list[tuple[Any, str, str, int | None]] = []
        for n in names:
            sample = SAMPLE_SIZE if sizes.get(n, 0) > SAMPLE_ABOVE else None
            targets = [(self.handle, "before")] + ([(self.variant, "after")] if self.variant is not None else [])
            for h, role in targets:
                if sample:
                    jobs.append((h, n, role, sample))
                jobs.append((h, n, role, None))
        self._pending_hist = len(jobs)
        for h, n, role, sample in jobs:
            run_in_thread(_histogram if role == "before" else _after_histogram, h, n, sample,
                          on_done=functools.partial(self._on_histogram_done, gen, hgen, n, role),
                          on_error=functools.partial(self._histogram_error, gen, hgen, n, role))

    def _on_histogram_done(self, gen: int, hgen: int, name: str, role: str, hist: Any) -> None:
        if gen != self._gen or hgen != self._hist_gen:
            return
        current = [s for s in self.histogram.series if s.label == name and s.role == role]
        if current and not current[0].sampled and getattr(hist, "sampled", False):
            pass  # the exact one already arrived; never replace it with the sample
        else:
            self.histogram.add_series(HistSeries.from_engine(name, hist, role))
        self._hist_step_done()

    def _histogram_error(self, gen: int, hgen: int, name: str, role: str, exc: BaseException, _tb: str) -> None:
        self._on_histogram_failed(gen, hgen, name, role, exc)

    def _on_histogram_failed(self, gen: int, hgen: int, name: str, role: str, exc: BaseException) -> None:
        if gen != self._gen or hgen != self._hist_gen:
            return
        if role == "after":
            if isinstance(exc, NoCounterpart):
                if name not in self._missing:
                    self._missing.append(name)
                self.no_counterpart.setText(
                    f"No counterpart in {self.variant_label}: {', '.join(self._missing)} — the variant has no "
                    "tensor for this layer (removed or renamed by the pipeline); only the original is shown.")
                self.no_counterpart.show()
            self.status.setText(f"{name}: not in variant {self.variant_label} ({getattr(exc, 'message', exc)})")
        else:
            self.failed.emit(describe_exception(exc))
        self._hist_step_done()

    def _hist_step_done(self) -> None:
        self._pending_hist -= 1
        if self._pending_hist <= 0:
            self.histograms_updated.emit()


def depth_order(handle: Any, rows: list[Any]) -> list[Any]:
    """Model order for the depth overview. ONNX inventories follow the graph; torch/safetensors
    headers are name-sorted ("11.weight" before "2.weight"), so sort those naturally."""
    import re

    if getattr(handle, "format", "") == "onnx":
        return list(rows)

    def key(r: Any) -> list[Any]:
        return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(_get(r, "name"))) if t]
    return sorted(rows, key=key)


def _get(row: Any, key: str) -> Any:
    return row.get(key) if isinstance(row, dict) else getattr(row, key, None)


def _inventory(handle: Any) -> list[Any]:
    from slimline.core.stats import layer_inventory

    return layer_inventory(handle)


def _stats(handle: Any) -> list[Any]:
    from slimline.core.stats import compute_stats

    return compute_stats(handle)


def _histogram(handle: Any, name: str, sample: int | None) -> Any:
    from slimline.core.stats import histogram, layer_inventory

    try:
        return histogram(handle, name, bins=64, sample=sample)
    except Exception:
        # a converted/quantized variant renames tensors ("16.weight" → "16.weight_quantized"):
        # fall back to the biggest tensor whose name contains the original one
        cands = [r for r in layer_inventory(handle) if name in r.name]
        if not cands:
            raise
        return histogram(handle, max(cands, key=lambda r: r.params).name, bins=64, sample=sample)


class NoCounterpart(LookupError):
    """The variant has no tensor that holds this layer of the original."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no tensor for {name!r} in the variant")
        self.message = f"no tensor for {name!r} (removed or renamed)"


def _after_histogram(handle: Any, name: str, sample: int | None) -> Any:
    """The variant's histogram of the original's layer ``name`` in real values.

    A quantized weight is read back as ``(q - zero_point) * scale`` so the overlay compares values with
    values, never int8 codes with floats; a layer the variant lacks raises ``NoCounterpart``.
    """
    from slimline.core.dequant import counterpart, dequantized_array, values_histogram
    from slimline.core.stats import histogram, layer_inventory

    rows = layer_inventory(handle)
    names = [r.name for r in rows]
    found = counterpart(names, name)
    if found is None:
        raise NoCounterpart(name)
    arr = dequantized_array(handle, found)
    if arr is not None:
        return values_histogram(arr, bins=64, sample=sample)
    return histogram(handle, found, bins=64, sample=sample)


def _user_message(exc: BaseException) -> UserMessage:
    return describe_exception(exc)


if __name__ == "__main__":  # python -m slimline.gui.inspector [MODEL]
    import sys

    from PySide6.QtWidgets import QApplication

    from slimline.core.demo import demo_paths
    from slimline.core.models import open_model

    app = QApplication(sys.argv)
    view = InspectorView()
    view.set_handle(open_model(sys.argv[1] if len(sys.argv) > 1 else demo_paths()["torch"]))
    view.resize(1400, 850)
    view.show()
    sys.exit(app.exec())
