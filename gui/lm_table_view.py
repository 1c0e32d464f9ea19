"""A language model run as a table in the Run tab: the report's and the CLI's cells, one row per step.

The charts show a figure per step; the table puts perplexity with its interval, the change vs
the original with its paired interval, next-token agreement, KL ≥, decode tokens/s, prefill,
size and flags side by side. The cells come from :mod:`slimline.core.lm.render` (the HTML report
and ``slimline run`` use the same formatters), so the window and the report read the same; the
line under it names the dataset, n and threads. Hidden in runs that measured no language model.

Run alone on a recorded run: ``python -m slimline.gui.lm_table_view RUN_FOLDER``.
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from slimline.core.lm import render as lr
from slimline.gui.step_results_view import StepResultsView
from slimline.gui.theme import flag_text, muted_text

# shown under the table; the rest of the footer goes to its tooltip
_SHOWN_FOOTER = 2


class LMRunTable(StepResultsView):
    """Rows of the results given with :meth:`add_result` (the original first)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table = QTableWidget(0, len(lr.LM_HEADERS))
        self.table.setObjectName("lmRunTable")
        self.table.setHorizontalHeaderLabels(lr.LM_HEADERS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        head = self.table.horizontalHeader()
        head.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        head.setStretchLastSection(True)
        self.footer = QLabel("")
        self.footer.setWordWrap(True)
        self.footer.setStyleSheet(f"color: {muted_text()}; font-size: 11px;")
        self.footer.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.table)
        lay.addWidget(self.footer)
        self.setVisible(False)

    def has_content(self) -> bool:
        return any(r.lm is not None for r in self.results)  # nothing to show until a language-model figure arrives

    def _clear_view(self) -> None:
        self.table.setRowCount(0)
        self.footer.clear()

    def cell(self, row: int, header: str) -> str:
        """The text of one cell (tests, screenshots)."""
        item = self.table.item(row, lr.LM_HEADERS.index(header))
        return item.text() if item is not None else ""

    def _render(self) -> None:
        _, rows = lr.lm_rows(self.results)
        self.table.setRowCount(len(rows))
        flags_col = lr.LM_HEADERS.index("flags")
        for i, (r, row) in enumerate(zip(self.results, rows)):
            for j, value in enumerate(row):
                item = QTableWidgetItem(str(value))
                if j > 0:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if j == flags_col:
                    bad = [f for f in r.flags if f != "noisy"]
                    item.setText(", ".join(f.replace("_", " ") for f in r.flags) or "ok")
                    item.setToolTip("\n".join(r.warnings) or "no flags")
                    if bad:
                        item.setForeground(QColor(flag_text()))
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        height = self.table.horizontalHeader().height() + sum(self.table.rowHeight(i) for i in range(len(rows)))
        self.table.setFixedHeight(height + 2 * self.table.frameWidth() + 2)
        lines = lr.lm_footer(self.results)
        self.footer.setText("\n".join(lines[:_SHOWN_FOOTER]))
        self.footer.setToolTip("\n".join(lines))
        self.setMaximumHeight(self.sizeHint().height())   # the splitter gives the rest to the charts and generations


if __name__ == "__main__":  # python -m slimline.gui.lm_table_view RUN_FOLDER
    import sys
    from pathlib import Path

    from PySide6.QtWidgets import QApplication

    from slimline.core.history import load_run

    if len(sys.argv) < 2:
        print("usage: python -m slimline.gui.lm_table_view RUN_FOLDER", file=sys.stderr)
        sys.exit(2)
    app = QApplication(sys.argv)
    view = LMRunTable()
    view.set_results(load_run(Path(sys.argv[1])).results)
    view.resize(1400, 260)
    view.show()
    sys.exit(app.exec())
