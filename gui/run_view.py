"""Run and watch: progress, current message, cancel, the log one click away, live charts
(and, for a language model, its generations side by side).

The view only displays; RunController owns the job. Progress bars show the
overall run and the current step; the charts gain a point per finished step.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from slimline.core.results import FailedEvent, FinalEvent, StepStartedEvent
from slimline.gui.generations_view import GenerationsView
from slimline.gui.lm_table_view import LMRunTable
from slimline.gui.step_charts import StepCharts
from slimline.gui.theme import muted_text

MAX_LOG_BLOCKS = 5000


class RunView(QWidget):
    """Signals: ``run_clicked`` and ``cancel_clicked`` (the window decides what they do)."""

    run_clicked = Signal()
    cancel_clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_button = QPushButton("▶ Run pipeline")
        self.run_button.setToolTip("Run the pipeline on the open model (Ctrl+R)")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the run (Esc); nothing half-written is kept")
        self.cancel_button.setEnabled(False)
        self.log_button = QPushButton("Show log")
        self.log_button.setCheckable(True)
        self.overall = QProgressBar()
        self.overall.setFormat("Overall %p%")
        self.step_bar = QProgressBar()
        self.step_bar.setFormat("Step %p%")
        self.message = QLabel("Ready. Build a pipeline, then press Run.")
        # one line whose width never follows the text: a message that wrapped or widened the window
        # re-laid out (and repainted) every chart several times a second during a run
        self.message.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.context = QLabel("")
        self.context.setWordWrap(True)
        self.context.setStyleSheet(f"color: {muted_text()};")
        top = QHBoxLayout()
        top.addWidget(self.run_button)
        top.addWidget(self.cancel_button)
        top.addWidget(self.overall, 2)
        top.addWidget(self.step_bar, 1)
        top.addWidget(self.log_button)
        self.charts = StepCharts()
        self.lm_table = LMRunTable()          # a language model's figures per step, as in the report
        self.generations = GenerationsView()  # shown once a language model's continuations arrive
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(MAX_LOG_BLOCKS)
        self.log.setPlaceholderText("Run log")
        self.log.hide()
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.charts)
        split.addWidget(self.lm_table)
        split.addWidget(self.generations)
        split.addWidget(self.log)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 0)
        split.setStretchFactor(2, 2)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.message)
        lay.addWidget(self.context)
        lay.addWidget(split, 1)
        self.run_button.clicked.connect(self.run_clicked)
        self.cancel_button.clicked.connect(self.cancel_clicked)
        self.log_button.toggled.connect(self._on_log_button_toggled)
        self._titles: dict[str, str] = {}

    def set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def reset(self, context: str = "") -> None:
        self.charts.clear()
        self.lm_table.clear()
        self.generations.clear()
        self.overall.setValue(0)
        self.step_bar.setValue(0)
        self.step_bar.setFormat("Step %p%")
        self.message.setText("Starting the worker process…")
        self.context.setText(context)
        self.log.clear()
        self._titles = {}

    def clear(self) -> None:
        """Nothing run yet (another model is open): no figures, no log of a run that was not its own."""
        self.reset("")
        self.message.setText("No run yet: press Run to run the pipeline on the open model.")

    def show_log(self, on: bool = True) -> None:
        self.log_button.setChecked(on)

    def append_log(self, line: str) -> None:
        self.log.appendPlainText(line)
        self.log.moveCursor(QTextCursor.MoveOperation.End)

    def on_progress(self, overall: float, step_id: str, fraction: float, message: str) -> None:
        self.overall.setValue(int(round(overall * 100)))
        self.step_bar.setValue(int(round(fraction * 100)))
        if step_id == "original" and "original" not in self._titles:  # progress before (or without) its start event
            self._titles["original"] = "Original model"
            self.step_bar.setFormat("Original %p%")
        title = self._titles.get(step_id, step_id)
        text = f"{title}: {message}" if message else title
        if text != self.message.text():
            self.message.setText(text)
            self.message.setToolTip(text)

    def on_step_started(self, ev: StepStartedEvent) -> None:
        sid = ev.step_id
        self._titles[sid] = (ev.title or "Original model") if sid == "original" else f"{sid} · {ev.title}"
        self.step_bar.setFormat(("Original" if sid == "original" else sid) + " %p%")
        self.step_bar.setValue(0)
        total = ev.total or 1
        self.overall.setValue(int(round(100 * ev.index / total)))
        self.message.setText(f"Step {ev.index + 1}/{total}: {ev.title or sid}")

    def on_finished(self, status: str, ev: FinalEvent) -> None:
        self.set_running(False)
        if status == "done":
            self.overall.setValue(100)
            self.step_bar.setValue(100)
            self.message.setText("Run finished. See the Results tab for all variants.")
        elif status == "cancelled":
            self.message.setText("Run cancelled; no output of the unfinished step was kept.")
        else:
            message, hint = (ev.message, ev.hint) if isinstance(ev, FailedEvent) else ("", "")
            self.message.setText(f"Run failed: {message}" + (f" → {hint}" if hint else ""))
            self.show_log(True)

    def _on_log_button_toggled(self, on: bool) -> None:
        self.log.setVisible(on)
        self.log_button.setText("Hide log" if on else "Show log")
