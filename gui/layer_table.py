"""Layer table: one row per weight tensor with every statistic the engine computes.

A QAbstractTableModel over the engine's LayerRow objects, behind a proxy that
sorts numerically and filters by name and layer type. Unusual layers (high
sparsity, outliers, NaN/Inf) are tinted and say why in the tooltip, so problems
stand out without reading every number.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTableView,
    QVBoxLayout,
    QWidget,
)

HIGH_SPARSITY = 0.5      # more than half exact zeros: pruned, or dead
OUTLIER_FRAC = 1e-3      # |w-mean| > 6 std is ~2e-9 for a Gaussian; 0.1 % is a real tail
SORT_ROLE = Qt.ItemDataRole.UserRole + 1


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    kind: str = "text"   # text | int | float | pct | bytes | shape
    tip: str = ""


COLUMNS: list[Column] = [
    Column("name", "Tensor", tip="Weight tensor name"),
    Column("layer", "Layer", tip="Owning layer / node"),
    Column("op_type", "Type", tip="Layer or op type"),
    Column("shape", "Shape", "shape"),
    Column("dtype", "dtype"),
    Column("params", "Params", "int", "Number of elements"),
    Column("bytes", "Bytes", "bytes", "Bytes of this tensor"),
    Column("min", "Min", "float"),
    Column("max", "Max", "float"),
    Column("mean", "Mean", "float"),
    Column("std", "Std", "float"),
    Column("mean_abs", "Mean |w|", "float"),
    Column("sparsity", "Sparsity", "pct", "Fraction of exact zeros"),
    Column("outlier_frac", "Outliers", "pct", "Fraction with |w − mean| > 6 std"),
    Column("nan_count", "NaN", "int"),
    Column("inf_count", "Inf", "int"),
    Column("sensitivity", "Sensitivity", "sens", "Rank and score from the last sensitivity analysis (Sensitivity "
           "panel): the metric lost when the step changes this layer, or its cheap score (error at the layer)"),
]
SENS_SOURCE = {"end_metric": "end metric", "output_error": "output error (cheap)",
               "weight_error": "weight error (cheap)"}


def fmt_bytes(n: float | int | None) -> str:
    """Byte counts in the CLI's and the report's decimal units (kB = 1000 B); empty for a missing value."""
    from slimline.core.render import fmt_bytes as engine_fmt_bytes

    return "" if n is None else engine_fmt_bytes(n)


def _get(row: Any, key: str) -> Any:
    if isinstance(row, dict):
        return row.get(key)
    return getattr(row, key, None)


def unusual_reasons(row: Any) -> list[str]:
    """Why a layer deserves a look; empty when nothing stands out (or stats are pending)."""
    out: list[str] = []
    nan, inf = _get(row, "nan_count") or 0, _get(row, "inf_count") or 0
    if nan:
        out.append(f"{nan} NaN values")
    if inf:
        out.append(f"{inf} Inf values")
    sp = _get(row, "sparsity")
    if sp is not None and sp >= HIGH_SPARSITY:
        out.append(f"high sparsity ({sp:.0%} zeros)")
    of = _get(row, "outlier_frac")
    if of is not None and of >= OUTLIER_FRAC:
        out.append(f"outliers ({of:.2%} beyond 6 std)")
    return out


_ROLES = frozenset({Qt.ItemDataRole.DisplayRole, SORT_ROLE, Qt.ItemDataRole.TextAlignmentRole,
                    Qt.ItemDataRole.BackgroundRole, Qt.ItemDataRole.ToolTipRole})


class LayerTableModel(QAbstractTableModel):
    """Rows are the engine's LayerRow objects (or dicts with the same keys)."""

    def __init__(self, rows: Sequence[Any] = (), parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: list[Any] = list(rows)
        self._sens: dict[str, Any] = {}   # tensor name -> slimline.core.sensitivity.LayerSensitivity

    def set_sensitivity(self, by_tensor: dict[str, Any]) -> None:
        """Show a sensitivity ranking in its column (``{}`` clears it)."""
        self._sens = dict(by_tensor)
        col = next(i for i, c in enumerate(COLUMNS) if c.key == "sensitivity")
        if self._rows:
            self.dataChanged.emit(self.index(0, col), self.index(len(self._rows) - 1, col))

    # --- data access -------------------------------------------------------------------
    def set_rows(self, rows: Sequence[Any]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()

    def update_rows(self, rows: Sequence[Any]) -> None:
        """Merge computed stats by name, keeping row order (selection survives)."""
        by_name = {_get(r, "name"): r for r in rows}
        if [_get(r, "name") for r in self._rows] != list(by_name):
            self.set_rows(rows)
            return
        self._rows = [by_name.get(_get(r, "name"), r) for r in self._rows]
        if self._rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._rows) - 1, len(COLUMNS) - 1))

    def row_at(self, i: int) -> Any:
        return self._rows[i]

    def rows(self) -> list[Any]:
        return list(self._rows)

    def names(self) -> list[str]:
        return [str(_get(r, "name")) for r in self._rows]

    def row_of(self, name: str) -> int:
        for i, r in enumerate(self._rows):
            if _get(r, "name") == name:
                return i
        return -1

    # --- Qt API ------------------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and 0 <= section < len(COLUMNS):
            if role == Qt.ItemDataRole.DisplayRole:
                return COLUMNS[section].title
            if role == Qt.ItemDataRole.ToolTipRole:
                return COLUMNS[section].tip or None
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or role not in _ROLES:  # views ask ~10 roles per cell; answer the rest fast
            return None
        row, col = self._rows[index.row()], COLUMNS[index.column()]
        if col.kind == "sens":
            return self._sens_data(self._sens.get(str(_get(row, "name"))), role)
        value = _get(row, col.key)
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(value, col.kind)
        if role == SORT_ROLE:
            if col.kind == "shape":
                return math.prod(int(d) for d in value if isinstance(d, int)) if value else 0
            if value is None:
                return -math.inf if col.kind != "text" else ""
            return value if col.kind != "text" else str(value)
        if role == Qt.ItemDataRole.TextAlignmentRole and col.kind not in ("text", "shape"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        reasons = unusual_reasons(row)
        if role == Qt.ItemDataRole.BackgroundRole and reasons:
            bad = (_get(row, "nan_count") or 0) or (_get(row, "inf_count") or 0)
            return QColor(220, 53, 69, 90) if bad else QColor(255, 193, 7, 90)
        if role == Qt.ItemDataRole.ToolTipRole and reasons:
            return "Unusual: " + "; ".join(reasons)
        return None

    @staticmethod
    def _sens_data(sens: Any, role: int) -> Any:
        if role == Qt.ItemDataRole.DisplayRole:
            if sens is None:
                return ""
            fid = f" (Δfid {sens.fidelity_score:.2g})" if sens.score == 0 and sens.source == "end_metric" else ""
            return f"#{sens.rank}  {sens.score:.4g}{fid}"
        if role == SORT_ROLE:
            return -math.inf if sens is None else (2 - ["end_metric", "output_error", "weight_error"].index(
                sens.source)) * 1e6 + float(sens.score)
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole and sens is not None:
            return f"rank {sens.rank}: {SENS_SOURCE.get(sens.source, sens.source)} {sens.score:.4g} ({sens.layer})"
        return None

    @staticmethod
    def _display(value: Any, kind: str) -> str:
        if value is None:
            return "…" if kind in ("float", "pct") else ""
        if kind == "shape":
            return "×".join(str(d) for d in value) if value else "scalar"
        if kind == "int":
            return f"{int(value):,}"
        if kind == "bytes":
            return fmt_bytes(value)
        if kind == "pct":
            return f"{float(value):.2%}"
        if kind == "float":
            v = float(value)
            return f"{v:.4g}"
        return str(value)


class LayerFilterProxy(QSortFilterProxyModel):
    """Case-insensitive name substring + exact type filter; numeric sort via SORT_ROLE."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._text = ""
        self._type = ""
        self._unusual_only = False
        self.setSortRole(SORT_ROLE)

    def _refilter(self, apply: Any) -> None:
        """Qt ≥ 6.10 wants begin/endFilterChange around filter edits; older Qt has invalidateFilter."""
        if hasattr(self, "beginFilterChange"):
            self.beginFilterChange()
            apply()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:  # pragma: no cover
            apply()
            self.invalidateFilter()

    def set_text(self, text: str) -> None:
        self._refilter(lambda: setattr(self, "_text", text.strip().lower()))

    def set_type(self, op_type: str) -> None:
        self._refilter(lambda: setattr(self, "_type", op_type))

    def set_unusual_only(self, on: bool) -> None:
        self._refilter(lambda: setattr(self, "_unusual_only", on))

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:  # noqa: N802
        model = self.sourceModel()
        if not isinstance(model, LayerTableModel):
            return True
        row = model.row_at(source_row)
        if self._text:
            hay = f"{_get(row, 'name')} {_get(row, 'layer') or ''}".lower()
            if self._text not in hay:
                return False
        if self._type and str(_get(row, "op_type")) != self._type:
            return False
        if self._unusual_only and not unusual_reasons(row):
            return False
        return True


class LayerTableView(QWidget):
    """Filter bar + table. Emits the selected tensor names (several → overlaid histograms)."""

    selection_changed = Signal(list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = LayerTableModel(parent=self)
        self.proxy = LayerFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter by name…")
        self.filter_edit.setClearButtonEnabled(True)
        self.type_combo = QComboBox()
        self.type_combo.addItem("All types", "")
        self.unusual_combo = QComboBox()
        self.unusual_combo.addItems(["All layers", "Unusual only"])
        self.count_label = QLabel()
        bar = QHBoxLayout()
        bar.addWidget(self.filter_edit, 2)
        bar.addWidget(self.type_combo, 1)
        bar.addWidget(self.unusual_combo)
        bar.addWidget(self.count_label)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setResizeContentsPrecision(64)  # widths from 64 rows, not all of them
        self.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # keep model (depth) order
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(bar)
        lay.addWidget(self.table)
        self.filter_edit.textChanged.connect(self._on_filter_edit_text_changed)
        self.type_combo.currentIndexChanged.connect(self._on_type_combo_changed)
        self.unusual_combo.currentIndexChanged.connect(self._on_unusual_combo_changed)
        self.table.selectionModel().selectionChanged.connect(self._on_table_selection_changed)
        self._update_count()

    def set_rows(self, rows: Sequence[Any]) -> None:
        self.model.set_rows(rows)
        types = sorted({str(_get(r, "op_type")) for r in rows if _get(r, "op_type")})
        self.type_combo.blockSignals(True)
        self.type_combo.clear()
        self.type_combo.addItem("All types", "")
        for t in types:
            self.type_combo.addItem(t, t)
        self.type_combo.blockSignals(False)
        self.proxy.set_type("")
        self.table.resizeColumnsToContents()
        self._update_count()

    def update_stats(self, rows: Sequence[Any]) -> None:
        self.model.update_rows(rows)
        self._update_count()

    def selected_names(self) -> list[str]:
        rows = sorted({self.proxy.mapToSource(i).row() for i in self.table.selectionModel().selectedRows()})
        return [self.model.names()[r] for r in rows]

    def select_name(self, name: str) -> None:
        r = self.model.row_of(name)
        if r < 0:
            return
        idx = self.proxy.mapFromSource(self.model.index(r, 0))
        if not idx.isValid():  # filtered out: clear the filter so the row can show
            self.filter_edit.clear()
            self.type_combo.setCurrentIndex(0)
            self.unusual_combo.setCurrentIndex(0)
            idx = self.proxy.mapFromSource(self.model.index(r, 0))
        sel = self.table.selectionModel()
        flags = sel.SelectionFlag.ClearAndSelect | sel.SelectionFlag.Rows
        sel.select(idx, flags)
        sel.setCurrentIndex(idx, sel.SelectionFlag.NoUpdate)
        self.table.scrollTo(idx)

    def _update_count(self) -> None:
        shown, total = self.proxy.rowCount(), self.model.rowCount()
        unusual = sum(1 for r in self.model.rows() if unusual_reasons(r))
        extra = f", {unusual} unusual" if unusual else ""
        self.count_label.setText(f"{shown}/{total} tensors{extra}")

    def _on_filter_edit_text_changed(self, text: str) -> None:
        self.proxy.set_text(text)
        self._update_count()

    def _on_type_combo_changed(self, _i: int) -> None:
        self.proxy.set_type(self.type_combo.currentData() or "")
        self._update_count()

    def _on_unusual_combo_changed(self, i: int) -> None:
        self.proxy.set_unusual_only(i == 1)
        self._update_count()

    def _on_table_selection_changed(self, *_: Any) -> None:
        self.selection_changed.emit(self.selected_names())


def _demo_rows() -> list[dict[str, Any]]:
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        w = rng.normal(0, 0.1, size=(16, 8))
        if i == 3:
            w[w < 0.05] = 0
        if i == 7:
            w[0, 0] = np.nan
        rows.append({"name": f"layer{i}.weight", "layer": f"layer{i}", "op_type": "Linear" if i % 2 else "Conv2d",
                     "shape": list(w.shape), "dtype": "float32", "params": w.size, "bytes": w.size * 4,
                     "min": float(np.nanmin(w)), "max": float(np.nanmax(w)), "mean": float(np.nanmean(w)),
                     "std": float(np.nanstd(w)), "mean_abs": float(np.nanmean(abs(w))),
                     "sparsity": float((w == 0).mean()), "outlier_frac": 0.0,
                     "nan_count": int(np.isnan(w).sum()), "inf_count": 0})
    return rows


if __name__ == "__main__":  # python -m slimline.gui.layer_table
    import sys

    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv)
    view = LayerTableView()
    view.set_rows(_demo_rows())
    view.resize(1000, 400)
    view.show()
    sys.exit(app.exec())
