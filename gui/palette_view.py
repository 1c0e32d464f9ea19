"""Palette of every registered plugin, grouped by category, with search.

Plugins that cannot take the open model are greyed with the reason as tooltip
(``Plugin().check_format``) but can still be added: in a pipeline the previous
step may convert the format, and the lane offers the one-click fix. Plugins that
failed to import are listed with their error and cannot be added.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QAbstractItemView, QLineEdit, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

PLUGIN_MIME = "application/x-slimline-plugin"
ID_ROLE = Qt.ItemDataRole.UserRole + 1
REASON_ROLE = Qt.ItemDataRole.UserRole + 2
CATEGORY_TITLES = {"prune": "Prune", "quantize": "Quantize", "distill": "Distill", "lowrank": "Low-rank",
                   "convert": "Convert", "other": "Other", "_broken": "Failed to load"}


class PaletteTree(QTreeWidget):
    """Tree whose plugin items drag out as PLUGIN_MIME (the plugin id)."""

    def mimeTypes(self) -> list[str]:  # noqa: N802
        return [PLUGIN_MIME]

    def mimeData(self, items: Any) -> QMimeData:  # noqa: N802
        mime = QMimeData()
        ids = [it.data(0, ID_ROLE) for it in items if it.data(0, ID_ROLE)]
        if ids:
            mime.setData(PLUGIN_MIME, ids[0].encode())
        return mime


class PaletteView(QWidget):
    """Emits ``plugin_activated(plugin_id)`` on double-click / Enter."""

    plugin_activated = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search plugins…")
        self.search.setClearButtonEnabled(True)
        self.tree = PaletteTree()
        self.tree.setHeaderHidden(True)
        self.tree.setDragEnabled(True)
        self.tree.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.search)
        lay.addWidget(self.tree, 1)
        self.items: dict[str, QTreeWidgetItem] = {}
        self.search.textChanged.connect(self._on_search_text_changed)
        self.tree.itemActivated.connect(self._on_tree_item_activated)
        self._model: Any = None
        self.reload()

    def reload(self) -> None:
        """(Re)read the registry; cheap because discovery is cached."""
        from slimline.core.registry import discover

        self.tree.clear()
        self.items = {}
        groups: dict[str, QTreeWidgetItem] = {}
        entries = sorted(discover().values(), key=lambda e: (e.plugin.category if e.plugin else "_broken",
                                                             e.plugin.title if e.plugin else e.id))
        for e in entries:
            cat = e.plugin.category if e.plugin else "_broken"
            if cat not in groups:
                g = QTreeWidgetItem([CATEGORY_TITLES.get(cat, cat.title())])
                g.setFlags(Qt.ItemFlag.ItemIsEnabled)
                f = g.font(0)
                f.setBold(True)
                g.setFont(0, f)
                groups[cat] = g
            if e.plugin is not None:
                it = QTreeWidgetItem([e.plugin.title])
                it.setData(0, ID_ROLE, e.id)
                it.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsDragEnabled)
                fmt = f"{', '.join(e.plugin.input_formats)} → {e.plugin.output_format}"
                it.setToolTip(0, f"{e.id} (v{e.plugin.version})\n{e.plugin.description}\n{fmt}")
            else:
                it = QTreeWidgetItem([e.id])
                it.setData(0, ID_ROLE, "")
                it.setFlags(Qt.ItemFlag.NoItemFlags)
                it.setToolTip(0, f"{e.id} failed to load:\n{e.error}")
                it.setForeground(0, QBrush(QColor("#d62728")))
            it.setData(0, REASON_ROLE, "")
            groups[cat].addChild(it)
            self.items[e.id] = it
        order = list(CATEGORY_TITLES)
        for key in sorted(groups, key=lambda c: order.index(c) if c in order else 99):
            self.tree.addTopLevelItem(groups[key])
            groups[key].setExpanded(True)
        self.set_model(self._model)

    def set_model(self, model: Any) -> None:
        """Grey plugins that cannot take this model; the reason goes in the tooltip."""
        from slimline.core.registry import discover

        self._model = model
        for pid, it in self.items.items():
            entry = discover().get(pid)
            if entry is None or entry.plugin is None:
                continue
            reason = ""
            if model is not None:
                try:
                    probs = entry.plugin().check_format(model)
                except Exception as exc:  # a plugin's check must not break the palette
                    probs = []
                    reason = f"check failed: {exc}"
                if probs:
                    reason = "; ".join(str(p) for p in probs)
            it.setData(0, REASON_ROLE, reason)
            base_tip = it.toolTip(0).split("\n\nCannot apply")[0]
            if reason:
                it.setForeground(0, QBrush(QColor(150, 150, 150)))
                it.setToolTip(0, f"{base_tip}\n\nCannot apply to the open model: {reason}")
            else:
                it.setForeground(0, self.tree.palette().text())
                it.setToolTip(0, base_tip)

    def reason(self, plugin_id: str) -> str:
        it = self.items.get(plugin_id)
        return str(it.data(0, REASON_ROLE) or "") if it else ""

    def visible_ids(self) -> list[str]:
        return [pid for pid, it in self.items.items() if not it.isHidden()]

    def _on_search_text_changed(self, text: str) -> None:
        t = text.strip().lower()
        for i in range(self.tree.topLevelItemCount()):
            g = self.tree.topLevelItem(i)
            if g is None:
                continue
            any_shown = False
            for j in range(g.childCount()):
                it = g.child(j)
                if it is None:
                    continue
                hay = f"{it.text(0)} {it.data(0, ID_ROLE)} {it.toolTip(0)} {g.text(0)}".lower()
                show = not t or t in hay
                it.setHidden(not show)
                any_shown |= show
            g.setHidden(not any_shown)

    def _on_tree_item_activated(self, item: QTreeWidgetItem, _col: int = 0) -> None:
        pid = item.data(0, ID_ROLE)
        if pid:
            self.plugin_activated.emit(str(pid))


if __name__ == "__main__":  # python -m slimline.gui.palette_view
    import sys

    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv)
    view = PaletteView()
    view.plugin_activated.connect(print)
    view.resize(300, 500)
    view.show()
    sys.exit(app.exec())
