"""Layer table: one row per weight tensor with every statistic the engine computes.

A QAbstractTableModel over the engine's LayerRow objects, behind a proxy that
sorts numerically and filters by name and layer type. Unusual layers (high
sparsity, outliers, NaN/Inf) are tinted and say why in the tooltip, so problems
stand out without reading every number.

Repeated blocks (an LLM's 30 decoder layers: :mod:`slimline.core.layer_groups`) show as one
collapsible row each, ``▸ model.layers.0 … 29``, with sums and pooled statistics; click its
name (or double-click the row) to list its tensors. A group row is an extra row of the model;
``rows()``/``names()`` stay the tensors only. Filters look inside collapsed groups, and a
sort keeps every group's tensors under its row.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from slimline.core.layer_groups import BlockGroup, group_blocks, group_row

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
                    Qt.ItemDataRole.BackgroundRole, Qt.ItemDataRole.ToolTipRole, Qt.ItemDataRole.FontRole})
EXPANDED, COLLAPSED = "▾", "▸"
CHILD_INDENT = "    "


@dataclass(frozen=True)
class Item:
    """One displayed row: a tensor (``row`` indexes the tensor rows) or a group header (``group``)."""

    row: int = -1
    group: int = -1         # the group this item heads (header) or belongs to (tensor); -1: none

    @property
    def is_group(self) -> bool:
        return self.row < 0


class LayerTableModel(QAbstractTableModel):
    """Rows are the engine's LayerRow objects (or dicts with the same keys), plus one row per block group."""

    grouping_changed = Signal()

    def __init__(self, rows: Sequence[Any] = (), parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: list[Any] = []
        self._groups: list[BlockGroup] = []
        self._items: list[Item] = []
        self._expanded: set[int] = set()
        self._summaries: dict[int, Any] = {}
        self._display_of: dict[str, int] = {}
        self._header_of: dict[int, int] = {}
        self._members: dict[int, list[int]] = {}
        self._sens: dict[str, Any] = {}   # tensor name -> slimline.core.sensitivity.LayerSensitivity
        self._build(rows)

    def set_sensitivity(self, by_tensor: dict[str, Any]) -> None:
        """Show a sensitivity ranking in its column (``{}`` clears it)."""
        self._sens = dict(by_tensor)
        col = next(i for i, c in enumerate(COLUMNS) if c.key == "sensitivity")
        if self._items:
            self.dataChanged.emit(self.index(0, col), self.index(len(self._items) - 1, col))

    # --- data access -------------------------------------------------------------------
    def _build(self, rows: Sequence[Any], *, keep_groups: bool = False) -> None:
        self._rows = list(rows)
        if not keep_groups:
            self._groups = group_blocks(self._rows)
            self._expanded = set()
        self._summaries = {}
        where = {n: gi for gi, g in enumerate(self._groups) for n in g.names}
        members: dict[int, list[int]] = {}
        for i, r in enumerate(self._rows):
            gi = where.get(str(_get(r, "name")), -1)
            if gi >= 0:
                members.setdefault(gi, []).append(i)
        items: list[Item] = []
        for i, r in enumerate(self._rows):
            gi = where.get(str(_get(r, "name")), -1)
            if gi < 0:
                items.append(Item(row=i))
            elif members[gi][0] == i:   # the group's header stands where its first tensor stood
                items.append(Item(group=gi))
                items.extend(Item(row=j, group=gi) for j in members[gi])
        self._items = items
        self._display_of = {str(_get(self._rows[it.row], "name")): k for k, it in enumerate(items) if not it.is_group}
        self._header_of = {it.group: k for k, it in enumerate(items) if it.is_group}
        self._members = {gi: [k for k, it in enumerate(items) if it.group == gi and not it.is_group]
                         for gi in self._header_of}

    def set_rows(self, rows: Sequence[Any]) -> None:
        self.beginResetModel()
        self._build(rows)
        self.endResetModel()

    def update_rows(self, rows: Sequence[Any]) -> None:
        """Merge computed stats by name, keeping row order (selection survives)."""
        by_name = {_get(r, "name"): r for r in rows}
        if [_get(r, "name") for r in self._rows] != list(by_name):
            self.set_rows(rows)
            return
        self._rows = [by_name.get(_get(r, "name"), r) for r in self._rows]
        self._summaries = {}
        if self._items:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._items) - 1, len(COLUMNS) - 1))

    def item(self, i: int) -> Item:
        return self._items[i]

    def row_at(self, i: int) -> Any:
        """The tensor row, or a group's summary row (sums and pooled statistics), at display row ``i``."""
        it = self._items[i]
        if not it.is_group:
            return self._rows[it.row]
        if it.group not in self._summaries:
            self._summaries[it.group] = group_row(self._groups[it.group], self._rows)
        return self._summaries[it.group]

    def rows(self) -> list[Any]:
        """The tensor rows (no group rows), in model order."""
        return list(self._rows)

    def names(self) -> list[str]:
        return [str(_get(r, "name")) for r in self._rows]

    def row_of(self, name: str) -> int:
        """Display row of the tensor ``name`` (-1 if none)."""
        return self._display_of.get(name, -1)

    def groups(self) -> list[BlockGroup]:
        return list(self._groups)

    def group_row_of(self, gi: int) -> int:
        """Display row of group ``gi``'s header (-1 if none)."""
        return self._header_of.get(gi, -1)

    def is_expanded(self, gi: int) -> bool:
        return gi in self._expanded

    def set_expanded(self, gi: int, on: bool) -> None:
        if on == (gi in self._expanded) or not 0 <= gi < len(self._groups):
            return
        (self._expanded.add if on else self._expanded.discard)(gi)
        k = self.group_row_of(gi)
        if k >= 0:
            self.dataChanged.emit(self.index(k, 0), self.index(k, 0))
        self.grouping_changed.emit()

    def set_all_expanded(self, on: bool) -> None:
        self._expanded = set(range(len(self._groups))) if on else set()
        for gi in range(len(self._groups)):
            k = self.group_row_of(gi)
            self.dataChanged.emit(self.index(k, 0), self.index(k, 0))
        self.grouping_changed.emit()

    def members(self, gi: int) -> list[int]:
        """Display rows of a group's tensors."""
        return list(self._members.get(gi, []))

    # --- Qt API ------------------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._items)

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
        it = self._items[index.row()]
        row, col = self.row_at(index.row()), COLUMNS[index.column()]
        if col.kind == "sens":
            return None if it.is_group else self._sens_data(self._sens.get(str(_get(row, "name"))), role)
        value = _get(row, col.key)
        if it.is_group:
            return self._group_data(it.group, row, col, value, role)
        if role == Qt.ItemDataRole.DisplayRole:
            text = self._display(value, col.kind)
            return CHILD_INDENT + text if it.group >= 0 and col.key == "name" else text
        if role == Qt.ItemDataRole.FontRole:
            return None
        if role == SORT_ROLE:
            return _sort_value(value, col.kind)
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

    def _group_data(self, gi: int, row: Any, col: Column, value: Any, role: int) -> Any:
        group = self._groups[gi]
        if role == Qt.ItemDataRole.DisplayRole:
            if col.key == "name":
                return f"{EXPANDED if gi in self._expanded else COLLAPSED} {group.title}"
            if col.key == "shape":
                return ""
            return self._display(value, col.kind)
        if role == SORT_ROLE:
            return _sort_value(value, col.kind) if col.key != "shape" else group.params
        if role == Qt.ItemDataRole.FontRole:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole and col.kind not in ("text", "shape"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        inside = [self._rows[self._items[k].row] for k in self._members.get(gi, [])]
        odd = [r for r in inside if unusual_reasons(r)]
        if role == Qt.ItemDataRole.BackgroundRole:
            if any((_get(r, "nan_count") or 0) or (_get(r, "inf_count") or 0) for r in odd):
                return QColor(220, 53, 69, 90)
            return QColor(255, 193, 7, 70) if odd else QColor(120, 144, 156, 45)
        if role == Qt.ItemDataRole.ToolTipRole:
            state = "collapse" if gi in self._expanded else "list its tensors"
            reasons = unusual_reasons(row)
            extra = ("\nUnusual over the whole group: " + "; ".join(reasons)) if reasons else ""
            if odd:
                extra += (f"\n{len(odd)} of its tensors are unusual (e.g. {_get(odd[0], 'name')}: "
                          f"{'; '.join(unusual_reasons(odd[0]))})")
            return (f"{group.title}: {group.describe()} ({', '.join(group.members[:4])}"
                    f"{', …' if len(group.members) > 4 else ''}); statistics pooled over all of them.\n"
                    f"Click the name to {state}.{extra}")
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


def _sort_value(value: Any, kind: str) -> Any:
    if kind == "shape":
        return math.prod(int(d) for d in value if isinstance(d, int)) if value else 0
    if value is None:
        return -math.inf if kind != "text" else ""
    return value if kind != "text" else str(value)


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

    def refilter(self) -> None:
        """Apply a change of the model's grouping (a group expanded or folded)."""
        self._refilter(lambda: None)

    def set_text(self, text: str) -> None:
        self._refilter(lambda: setattr(self, "_text", text.strip().lower()))

    def set_type(self, op_type: str) -> None:
        self._refilter(lambda: setattr(self, "_type", op_type))

    def set_unusual_only(self, on: bool) -> None:
        self._refilter(lambda: setattr(self, "_unusual_only", on))

    def filtering(self) -> bool:
        return bool(self._text or self._type or self._unusual_only)

    def row_matches(self, row: Any) -> bool:
        """The tensor ``row`` passes the name, type and unusual filters."""
        if self._text:
            hay = f"{_get(row, 'name')} {_get(row, 'layer') or ''}".lower()
            if self._text not in hay:
                return False
        if self._type and str(_get(row, "op_type")) != self._type:
            return False
        if self._unusual_only and not unusual_reasons(row):
            return False
        return True

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:  # noqa: N802
        model = self.sourceModel()
        if not isinstance(model, LayerTableModel):
            return True
        it = model.item(source_row)
        if it.is_group:   # shown while any of its tensors passes the filters
            return not self.filtering() or any(self.row_matches(model.row_at(k)) for k in model.members(it.group))
        if not self.row_matches(model.row_at(source_row)):
            return False
        # a collapsed group hides its tensors, except those a filter is looking for
        return it.group < 0 or model.is_expanded(it.group) or self.filtering()

    def lessThan(self, left: QModelIndex | QPersistentModelIndex,  # noqa: N802
                 right: QModelIndex | QPersistentModelIndex) -> bool:
        """Sort top-level rows (tensors outside groups, group rows) by value; a group's tensors stay under it."""
        model = self.sourceModel()
        if not isinstance(model, LayerTableModel) or not model.groups():
            return bool(super().lessThan(left, right))
        col = left.column()

        def top(i: int) -> tuple[Any, int]:
            it = model.item(i)
            head = model.group_row_of(it.group) if it.group >= 0 else i
            return model.index(head, col).data(SORT_ROLE), head

        (lv, lh), (rv, rh) = top(left.row()), top(right.row())
        if lh != rh:
            if lv != rv:
                return bool(_less(lv, rv))
            return lh < rh
        lg, rg = model.item(left.row()).is_group, model.item(right.row()).is_group
        if lg != rg:   # the group row first, in either sort order
            descending = self.sortOrder() == Qt.SortOrder.DescendingOrder
            return rg if descending else lg
        return bool(_less(left.data(SORT_ROLE), right.data(SORT_ROLE)))

    def tensor_count(self) -> int:
        """Tensors passing the filters, whether or not their group is expanded."""
        model = self.sourceModel()
        if not isinstance(model, LayerTableModel):
            return self.rowCount()
        return sum(1 for r in model.rows() if self.row_matches(r))


def _less(a: Any, b: Any) -> bool:
    try:
        return bool(a < b)
    except TypeError:
        return str(a) < str(b)


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
        self.expand_button = QPushButton("Expand blocks")
        self.expand_button.setToolTip("List every tensor of the repeated blocks (decoder layers), or fold them again")
        self.expand_button.setCheckable(True)
        self.expand_button.hide()
        bar = QHBoxLayout()
        bar.addWidget(self.filter_edit, 2)
        bar.addWidget(self.type_combo, 1)
        bar.addWidget(self.unusual_combo)
        bar.addWidget(self.expand_button)
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
        self.expand_button.toggled.connect(self._on_expand_button_toggled)
        self.model.grouping_changed.connect(self._on_model_grouping_changed)
        self.table.clicked.connect(self._on_table_clicked)
        self.table.doubleClicked.connect(self._on_table_double_clicked)
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
        self.expand_button.blockSignals(True)
        self.expand_button.setChecked(False)
        self.expand_button.blockSignals(False)
        self.expand_button.setVisible(bool(self.model.groups()))
        self.table.resizeColumnsToContents()
        self._update_count()

    def update_stats(self, rows: Sequence[Any]) -> None:
        self.model.update_rows(rows)
        self._update_count()

    def selected_names(self) -> list[str]:
        """Selected tensors in model order (group rows are not tensors and are left out)."""
        rows = sorted({self.proxy.mapToSource(i).row() for i in self.table.selectionModel().selectedRows()})
        return [str(_get(self.model.row_at(r), "name")) for r in rows if not self.model.item(r).is_group]

    def set_group_expanded(self, gi: int, on: bool) -> None:
        self.model.set_expanded(gi, on)

    def select_name(self, name: str) -> None:
        r = self.model.row_of(name)
        if r < 0:
            return
        gi = self.model.item(r).group
        if gi >= 0 and not self.model.is_expanded(gi):
            self.model.set_expanded(gi, True)
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
        shown, total = self.proxy.tensor_count(), len(self.model.rows())
        unusual = sum(1 for r in self.model.rows() if unusual_reasons(r))
        extra = f", {unusual} unusual" if unusual else ""
        groups = self.model.groups()
        if groups:
            blocks = sum(g.blocks for g in groups)
            extra += f", {blocks} blocks in {len(groups)} group{'s' if len(groups) > 1 else ''}"
        self.count_label.setText(f"{shown}/{total} tensors{extra}")

    def _on_model_grouping_changed(self) -> None:
        self.proxy.refilter()
        self.table.resizeColumnToContents(0)   # unfolded tensor names are longer than the group's title
        self._update_count()

    def _on_expand_button_toggled(self, on: bool) -> None:
        self.model.set_all_expanded(on)
        self.expand_button.setText("Fold blocks" if on else "Expand blocks")

    def _on_table_clicked(self, index: QModelIndex) -> None:
        src = self.proxy.mapToSource(index)
        it = self.model.item(src.row()) if src.isValid() else None
        if it is not None and it.is_group and src.column() == 0:
            self.model.set_expanded(it.group, not self.model.is_expanded(it.group))

    def _on_table_double_clicked(self, index: QModelIndex) -> None:
        src = self.proxy.mapToSource(index)
        it = self.model.item(src.row()) if src.isValid() else None
        if it is not None and it.is_group and src.column() != 0:  # column 0 already toggled on the click
            self.model.set_expanded(it.group, not self.model.is_expanded(it.group))

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
        names = self.selected_names()
        if names or not self.table.selectionModel().selectedRows():  # a group row alone keeps the histogram
            self.selection_changed.emit(names)


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


def _demo_block_rows(blocks: int = 4) -> list[dict[str, Any]]:
    """A tiny decoder-shaped inventory: embeddings, ``blocks`` repeated blocks of three tensors, a final norm."""
    def row(name: str, shape: list[int], op: str, mean: float) -> dict[str, Any]:
        n = math.prod(shape)
        return {"name": name, "layer": name.rsplit(".", 1)[0], "op_type": op, "shape": shape, "dtype": "float32",
                "params": n, "bytes": 4 * n, "min": mean - 1, "max": mean + 1, "mean": mean, "std": 0.5,
                "mean_abs": abs(mean) + 0.4, "sparsity": 0.0, "outlier_frac": 0.0, "nan_count": 0, "inf_count": 0}

    rows = [row("model.embed_tokens.weight", [64, 8], "Embedding", 0.0)]
    for i in range(blocks):
        rows += [row(f"model.layers.{i}.self_attn.q_proj.weight", [8, 8], "Linear", 0.1 * i),
                 row(f"model.layers.{i}.mlp.up_proj.weight", [16, 8], "Linear", -0.1 * i),
                 row(f"model.layers.{i}.input_layernorm.weight", [8], "RMSNorm", 1.0)]
    return rows + [row("model.norm.weight", [8], "RMSNorm", 1.0)]


if __name__ == "__main__":  # python -m slimline.gui.layer_table [--blocks]
    import sys

    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv)
    view = LayerTableView()
    view.set_rows(_demo_block_rows() if "--blocks" in sys.argv else _demo_rows())
    view.resize(1000, 400)
    view.show()
    sys.exit(app.exec())
