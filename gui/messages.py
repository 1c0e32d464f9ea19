"""User-facing error display: message + hint in the window, details one click away.

Every failure a user can cause (bad file, invalid pipeline, failed step) ends up
here instead of a traceback dialog, so the window never shows raw stack traces
unless the user asks for them.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QMessageBox, QPushButton, QWidget


@dataclass
class UserMessage:
    """What we show: a one-line message, the next action, and optional details."""

    message: str
    hint: str = ""
    subject: str = ""
    details: str = ""
    level: str = "error"  # error | warning | info

    @property
    def text(self) -> str:
        return f"{self.subject}: {self.message}" if self.subject else self.message


def describe_exception(exc: BaseException, *, tb: str | None = None) -> UserMessage:
    """Turn any exception into a UserMessage; SlimlineErrors keep their message and hint."""
    details = tb if tb is not None else "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    message = getattr(exc, "message", None)
    if message is not None:
        return UserMessage(message=str(message), hint=getattr(exc, "hint", "") or "",
                           subject=getattr(exc, "subject", "") or "", details=details)
    return UserMessage(message=f"unexpected error: {type(exc).__name__}: {exc}",
                       hint="see the details; please report this if it keeps happening", details=details)


class MessageBanner(QWidget):
    """An inline banner at the top of the window: never modal, never a traceback."""

    closed = Signal()

    _COLORS = {"error": ("#f8d7da", "#58151c"), "warning": ("#fff3cd", "#664d03"), "info": ("#cfe2ff", "#052c65")}

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("messageBanner")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self._current: UserMessage | None = None
        lay = QHBoxLayout(self)
        lay.setContentsMargins(10, 6, 6, 6)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details_button = QPushButton("Show details")
        self.details_button.clicked.connect(self._on_details_clicked)
        close = QPushButton("✕")
        close.setFlat(True)
        close.setToolTip("Dismiss")
        close.setFixedWidth(28)
        close.clicked.connect(self._on_close_clicked)
        lay.addWidget(self.label, 1)
        lay.addWidget(self.details_button)
        lay.addWidget(close)
        self.hide()

    @property
    def current(self) -> UserMessage | None:
        return self._current

    def show_message(self, msg: UserMessage) -> None:
        self._current = msg
        bg, fg = self._COLORS.get(msg.level, self._COLORS["error"])
        self.setStyleSheet(f"#messageBanner {{ background: {bg}; border-radius: 4px; }}"
                           f" #messageBanner QLabel {{ color: {fg}; }}")
        hint = f"<br><i>→ {_esc(msg.hint)}</i>" if msg.hint else ""
        self.label.setText(f"<b>{_esc(msg.text)}</b>{hint}")
        self.details_button.setVisible(bool(msg.details))
        self.show()

    def clear(self) -> None:
        self._current = None
        self.hide()

    def _on_details_clicked(self) -> None:
        if self._current is not None:
            show_error_dialog(self, self._current)

    def _on_close_clicked(self) -> None:
        self.clear()
        self.closed.emit()


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def make_error_box(parent: QWidget | None, msg: UserMessage, title: str = "Slimline") -> QMessageBox:
    """A message box with the message, the hint and the traceback behind "Show Details…"."""
    box = QMessageBox(parent)
    box.setWindowTitle(title)
    box.setIcon({"error": QMessageBox.Icon.Critical, "warning": QMessageBox.Icon.Warning}
                .get(msg.level, QMessageBox.Icon.Information))
    box.setText(msg.text)
    if msg.hint:
        box.setInformativeText(f"→ {msg.hint}")
    if msg.details:
        box.setDetailedText(msg.details)
    return box


def show_error_dialog(parent: QWidget | None, msg: UserMessage, title: str = "Slimline") -> None:
    """Non-blocking: the box is shown with open(), so the event loop keeps running."""
    box = make_error_box(parent, msg, title)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
    box.open()
