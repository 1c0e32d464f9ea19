"""A one-line label that elides its text instead of widening its window.

A QLabel asks for its whole text's width as its minimum: a model file with a
250-character name made the window wider than the screen. This one asks for a
few characters and draws the rest elided (full text in the tooltip).
"""
from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QPainter, QPaintEvent
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

MIN_CHARS = 8


class ElidedLabel(QLabel):
    """``text()`` is the full text; what is painted is elided to the width it gets."""

    def __init__(self, text: str = "", parent: QWidget | None = None,
                 mode: Qt.TextElideMode = Qt.TextElideMode.ElideMiddle, max_chars: int = 60) -> None:
        super().__init__(text, parent)
        self._mode = mode
        self._max_chars = max_chars
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.setToolTip(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt naming
        super().setText(text)
        self.setToolTip(text)
        self.updateGeometry()

    def sizeHint(self) -> QSize:  # noqa: N802
        fm = self.fontMetrics()
        w = min(fm.horizontalAdvance(self.text()), fm.averageCharWidth() * self._max_chars)
        return QSize(w + 4, super().sizeHint().height())

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(self.fontMetrics().averageCharWidth() * MIN_CHARS, super().minimumSizeHint().height())

    def paintEvent(self, _event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        r = self.contentsRect()
        p.drawText(r, int(self.alignment()) | int(Qt.AlignmentFlag.AlignVCenter),
                   self.fontMetrics().elidedText(self.text(), self._mode, r.width()))
