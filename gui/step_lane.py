"""The pipeline as a lane of step cards, left to right in run order.

Cards are plain widgets in a scroll area (not item views) because each carries
its own controls: enable, duplicate, remove, a format-mismatch message with a
one-click fix, and the step's latest result with its flags. Reordering is a
drag of the card; adding is a drag from the palette. The lane never edits the
pipeline itself: it emits requests that the editor turns into undo commands.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QMimeData, QPoint, Qt, Signal
from PySide6.QtGui import QDrag, QDragEnterEvent, QDragMoveEvent, QDropEvent, QMouseEvent
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from slimline.core.results import StepResult
from slimline.gui.palette_view import PLUGIN_MIME
from slimline.gui.results import noise_reasons, split_flags
from slimline.gui.theme import flag_text, muted_text, ok_text, warn_text

STEP_MIME = "application/x-slimline-step"


def _ratio(new: float | None, old: float | None) -> float | None:
    return new / old if new is not None and old else None


def _colored(text: str, better: bool | None) -> str:
    return text if better is None else f"<span style='color:{ok_text() if better else flag_text()}'>{text}</span>"


def params_summary(params: dict[str, Any] | None, limit: int = 4) -> str:
    """The first few parameters, short enough for a card (all of them are in the tooltip)."""
    items = []
    for k, v in (params or {}).items():
        if isinstance(v, float):
            v = f"{v:g}"
        elif isinstance(v, (list, tuple)):
            v = ",".join(str(x) for x in v) or "—"
        text = str(v)
        items.append(f"{k.replace('_', ' ')}: {text if len(text) <= 18 else text[:17] + '…'}")
    more = len(items) - limit
    return " · ".join(items[:limit]) + (f" · +{more} more" if more > 0 else "")


def result_summary(result: StepResult, original: StepResult | None) -> tuple[str, str]:
    """(card HTML, tooltip): size, p50 at batch 1 and quality, each as a ratio to the original."""
    from slimline.gui.results import fmt_ms, latency_batches, latency_report, quality, size_bytes

    orig = original
    rows: list[tuple[str, str]] = []
    tip: list[str] = []
    size, size0 = size_bytes(result), size_bytes(orig)
    if size is not None:
        r = _ratio(size, size0)
        rows.append(("size", f"{size / 1e6:.2f} MB" + (" " + _colored(f"{r:.2f}×", r < 1.0) if r else "")))
        tip.append(f"size on disk {size:,} B" + (f" vs original {size0:,} B" if size0 else ""))
    for b in latency_batches(result):
        rep, rep0 = latency_report(result, b), latency_report(orig, b)
        if rep is None:
            continue
        r = _ratio(rep.p50_ms, rep0.p50_ms if rep0 else None)
        if b == min(latency_batches(result)):
            rows.append((f"p50 b{b}", fmt_ms(rep.p50_ms) + (" " + _colored(f"{r:.2f}×", r < 1.0) if r else "")))
        tip.append(f"batch {b}: p50 {fmt_ms(rep.p50_ms)}, p90 {fmt_ms(rep.p90_ms)}"
                   + (f" ({r:.2f}× the original's p50)" if r else "")
                   + (f", {rep.runs} runs" if rep.runs else "")
                   + (", random inputs" if rep.input_kind == "random" else ""))
    q, q0 = quality(result), quality(orig)
    if q.value is not None:
        if q.kind == "accuracy":
            delta = (q.value - q0.value) * 100 if q0.value is not None and q0.kind == "accuracy" else None
            rows.append(("top-1", f"{q.value:.4f}" + (" " + _colored(f"{delta:+.2f} pt", delta >= -0.005)
                                                     if delta is not None else "")))
        else:
            rows.append(("cosine", f"{q.value:.4f}"))
        tip.append(q.label)
    if result.cached:
        tip.append("cached: reused from an earlier identical run")
    body = "".join(f"<tr><td style='color:{muted_text()}'>{k}</td><td>&nbsp;{v}</td></tr>" for k, v in rows)
    html = f"<table cellspacing=0 cellpadding=0>{body}</table>" + (" <i>cached</i>" if result.cached else "")
    return html, "\n".join(tip)


class StepCard(QFrame):
    """One step. ``fix_requested`` is the one-click fix for a format mismatch."""

    clicked = Signal(str)
    enabled_toggled = Signal(str, bool)
    remove_requested = Signal(str)
    duplicate_requested = Signal(str)
    fix_requested = Signal(str)

    def __init__(self, step: Any, index: int, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.step_id = step.id
        self._press: QPoint | None = None
        self.setObjectName("stepCard")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setFixedWidth(230)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)
        self.title = QLabel(f"<b>{index + 1}. {title}</b>")
        self.title.setWordWrap(True)
        self.enabled_check = QCheckBox("on")
        self.enabled_check.setChecked(step.enabled)
        self.enabled_check.setToolTip("Enable or disable this step (disabled steps are skipped)")
        self.enabled_check.setEnabled(not step.placeholder_reason)
        head = QHBoxLayout()
        head.addWidget(self.title, 1)
        head.addWidget(self.enabled_check)
        self.plugin_label = QLabel(f"{step.plugin} · {step.id}")
        self.plugin_label.setStyleSheet(f"color: {muted_text()}; font-size: 11px;")
        self.params_label = QLabel(params_summary(step.params))
        self.params_label.setWordWrap(True)
        self.params_label.setStyleSheet("font-size: 11px;")
        self.params_label.setToolTip("\n".join(f"{k} = {v}" for k, v in (step.params or {}).items()))
        self.params_label.setVisible(bool(step.params))
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.flags_label = QLabel("")
        self.flags_label.setWordWrap(True)
        self.flags_label.setStyleSheet(f"color: {flag_text()}; font-weight: bold;")
        self.flags_label.hide()
        # "noisy" timing: a caveat, not a failure — muted, the reasons in the tooltip
        self.noisy_label = QLabel("")
        self.noisy_label.setWordWrap(True)
        self.noisy_label.setStyleSheet(f"color: {muted_text()}; font-style: italic;")
        self.noisy_label.hide()
        self.problem_label = QLabel("")
        self.problem_label.setWordWrap(True)
        self.problem_label.setStyleSheet(f"color: {warn_text()};")
        self.problem_label.hide()
        self.fix_button = QPushButton("Insert Convert to ONNX")
        self.fix_button.setToolTip("One-click fix: add a conversion step before this one")
        self.fix_button.hide()
        self.dup_button = QPushButton("Duplicate")
        self.remove_button = QPushButton("Remove")
        buttons = QHBoxLayout()
        buttons.addWidget(self.dup_button)
        buttons.addWidget(self.remove_button)
        lay = QVBoxLayout(self)
        lay.addLayout(head)
        lay.addWidget(self.plugin_label)
        lay.addWidget(self.params_label)
        lay.addWidget(self.status_label)
        lay.addWidget(self.flags_label)
        lay.addWidget(self.noisy_label)
        lay.addWidget(self.problem_label)
        lay.addWidget(self.fix_button)
        lay.addStretch(1)
        lay.addLayout(buttons)
        if step.placeholder_reason:
            self.set_problems([step.placeholder_reason], fix=False)
        self.enabled_check.toggled.connect(lambda on: self.enabled_toggled.emit(self.step_id, on))
        self.remove_button.clicked.connect(lambda: self.remove_requested.emit(self.step_id))
        self.dup_button.clicked.connect(lambda: self.duplicate_requested.emit(self.step_id))
        self.fix_button.clicked.connect(lambda: self.fix_requested.emit(self.step_id))
        self.set_selected(False)
        self._disabled_look(not step.enabled)

    def _disabled_look(self, off: bool) -> None:
        self.title.setEnabled(not off)
        self.plugin_label.setEnabled(not off)
        self.params_label.setEnabled(not off)

    def set_selected(self, on: bool) -> None:
        border = "2px solid palette(highlight)" if on else "1px solid palette(mid)"
        self.setStyleSheet(f"#stepCard {{ border: {border}; border-radius: 6px; }}")
        self._selected = on

    def set_problems(self, messages: list[str], fix: bool) -> None:
        self.problem_label.setText("⚠ " + "\n⚠ ".join(messages) if messages else "")
        self.problem_label.setVisible(bool(messages))
        self.fix_button.setVisible(fix)

    def set_status(self, text: str, flags: list[str] | None = None, reasons: list[str] | None = None) -> None:
        """Plain status (running…, failed) and flags; ``reasons`` become the flags' tooltip."""
        self.status_label.setText(text)
        self.status_label.setToolTip("")
        self.set_flags(list(flags or []), list(reasons or []))

    def set_result(self, result: StepResult, original: StepResult | None) -> None:
        """The step's measured figures against the original model, and its flags with the reasons."""
        html, tip = result_summary(result, original)
        self.status_label.setText(html)
        self.status_label.setToolTip(tip)
        self.set_flags(list(result.flags), list(result.warnings), noise_reasons(result, list(result.warnings)))

    def set_flags(self, flags: list[str], reasons: list[str], noisy_why: list[str] | None = None) -> None:
        """Failures (bigger, slower, over budget) in the flag colour; "noisy" muted beside them."""
        bad, neutral = split_flags(flags)
        bad_reasons = [r for r in reasons if "noisy" not in r] if neutral else reasons
        self.flags_label.setText("⚑ " + ", ".join(f.replace("_", " ") for f in bad) if bad else "")
        self.flags_label.setToolTip("Why:\n" + "\n".join(f"• {r}" for r in bad_reasons) if bad_reasons else "")
        self.flags_label.setVisible(bool(bad))
        why = noisy_why if noisy_why is not None else [r for r in reasons if "noisy" in r]
        self.noisy_label.setText("~ noisy latency: no faster/slower conclusion" if neutral else "")
        self.noisy_label.setToolTip("The timing cannot support a conclusion:\n" + "\n".join(f"• {r}" for r in why)
                                    if why else "The timing cannot support a conclusion")
        self.noisy_label.setVisible(bool(neutral))

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            self._press = event.position().toPoint()
            self.clicked.emit(self.step_id)
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._press is None or not (event.buttons() & Qt.MouseButton.LeftButton):
            return
        if (event.position().toPoint() - self._press).manhattanLength() < QApplication.startDragDistance():
            return
        drag = QDrag(self)
        mime = QMimeData()
        mime.setData(STEP_MIME, self.step_id.encode())
        drag.setMimeData(mime)
        drag.setPixmap(self.grab().scaledToWidth(160))
        self._press = None
        drag.exec(Qt.DropAction.MoveAction)


class StepLane(QScrollArea):
    """Horizontal lane; emits requests (add/move/…) for the editor to turn into commands."""

    step_selected = Signal(str)
    add_requested = Signal(str, int)        # plugin id, index
    move_requested = Signal(str, int)       # step id, new index
    enabled_requested = Signal(str, bool)
    remove_requested = Signal(str)
    duplicate_requested = Signal(str)
    fix_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setAcceptDrops(True)
        self.setMinimumHeight(190)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Maximum)
        self.inner = QWidget()
        self.row = QHBoxLayout(self.inner)
        self.row.setAlignment(Qt.AlignmentFlag.AlignLeft)
        self.setWidget(self.inner)
        self.cards: dict[str, StepCard] = {}
        self.selected = ""
        self.input_label = QLabel("")
        self.empty_label = QLabel("Double-click a plugin in the palette, or drag it here, to add a step.")
        self.empty_label.setStyleSheet(f"color: {muted_text()};")

    def set_steps(self, steps: list[Any], titles: dict[str, str], input_text: str = "") -> None:
        while self.row.count():
            item = self.row.takeAt(0)
            w = item.widget() if item is not None else None
            if w is not None and w not in (self.input_label, self.empty_label):
                w.hide()   # gone from the screen now, not when the event loop next deletes it
                w.deleteLater()
        self.cards = {}
        self.input_label.setText(input_text)
        self.input_label.setVisible(bool(input_text))
        self.row.addWidget(self.input_label)
        for i, s in enumerate(steps):
            card = StepCard(s, i, titles.get(s.plugin, s.plugin))
            card.clicked.connect(self._on_card_clicked)
            card.enabled_toggled.connect(self.enabled_requested)
            card.remove_requested.connect(self.remove_requested)
            card.duplicate_requested.connect(self.duplicate_requested)
            card.fix_requested.connect(self.fix_requested)
            self.cards[s.id] = card
            self.row.addWidget(card)
        self.row.addWidget(self.empty_label)
        self.empty_label.setVisible(not steps)
        if self.selected in self.cards:
            self.cards[self.selected].set_selected(True)
        elif self.selected:
            self.selected = ""
        self.updateGeometry()

    def sizeHint(self):  # noqa: N802 - as tall as the tallest card (+ scroll bar), not a fixed share
        from PySide6.QtCore import QSize

        h = max([c.sizeHint().height() for c in self.cards.values()] + [self.minimumHeight() - 30])
        return QSize(super().sizeHint().width(), h + self.horizontalScrollBar().sizeHint().height() + 12)

    def select(self, step_id: str) -> None:
        for sid, c in self.cards.items():
            c.set_selected(sid == step_id)
        self.selected = step_id if step_id in self.cards else ""
        if self.selected:
            self.ensureWidgetVisible(self.cards[self.selected])
        self.step_selected.emit(self.selected)

    def _on_card_clicked(self, step_id: str) -> None:
        self.select(step_id)

    # --- drag and drop -----------------------------------------------------------------
    def index_at(self, x: float) -> int:
        """Insertion index for a drop at lane x (viewport coordinates)."""
        x_inner = x + self.horizontalScrollBar().value()
        i = 0
        for card in self.cards.values():
            if card.geometry().center().x() < x_inner:
                i += 1
        return i

    def drop_mime(self, mime: QMimeData, x: float) -> bool:
        index = self.index_at(x)
        if mime.hasFormat(PLUGIN_MIME):
            self.add_requested.emit(bytes(mime.data(PLUGIN_MIME).data()).decode(), index)
            return True
        if mime.hasFormat(STEP_MIME):
            sid = bytes(mime.data(STEP_MIME).data()).decode()
            ids = list(self.cards)
            if sid in ids:
                cur = ids.index(sid)
                self.move_requested.emit(sid, index - 1 if index > cur else index)
            return True
        return False

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        self._accept_drag(event)

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802
        self._accept_drag(event)

    @staticmethod
    def _accept_drag(event: QDragMoveEvent) -> None:
        """Enter and move alike (QDragEnterEvent is a QDragMoveEvent): palette entries and cards only."""
        if event.mimeData().hasFormat(PLUGIN_MIME) or event.mimeData().hasFormat(STEP_MIME):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        if self.drop_mime(event.mimeData(), event.position().x()):
            event.acceptProposedAction()
        else:
            event.ignore()
