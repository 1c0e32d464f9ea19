"""Sweep dialog: a grid of step settings, the engine, and progress per variant, with cancel.

The grid editor offers the pipeline's enabled steps and the parameters of their plugins
that a grid can sweep (numbers, choices, switches, text); values are checked by the
engine's own grid rules (the plugin's Params) as they are typed, and the count of
variants is shown. The sweep runs in the engine's job child
(``slimline.core.engines.sweep:sweep_task``) polled by a timer, so the window never waits
on it; every variant that ends goes out as ``variant_recorded(run_id)`` and lands in
Results and the Pareto chart.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from slimline.core.engines.base import cpu_count, engine_problem
from slimline.core.engines.spec import VariantEvent
from slimline.core.pipeline import Pipeline
from slimline.core.results import CancelledEvent, DoneEvent, FailedEvent
from slimline.gui.form_schema import FieldSpec, parse_schema
from slimline.gui.layer_table import fmt_bytes
from slimline.gui.results import fmt_ms, latency_ms, quality, size_bytes
from slimline.gui.run_controller import lower_priority
from slimline.gui.theme import flag_text, muted_text, ok_text

POLL_MS = 100
SWEEPABLE = ("int", "float", "bool", "enum", "text")
COLS = ["#", "Settings", "Status", "Progress", "Size", "Quality", "p50", "Wall s", "Worker / reason"]
C_STATUS, C_PROGRESS, C_SIZE, C_QUALITY, C_P50, C_WALL, C_WORKER = 2, 3, 4, 5, 6, 7, 8


def sweepable_fields(plugin_id: str) -> list[FieldSpec]:
    """The parameters of a plugin a grid can sweep (scalars: numbers, choices, switches, text)."""
    from slimline.core.registry import get_plugin

    try:
        cls = get_plugin(plugin_id)
    except Exception:  # noqa: BLE001 - a plugin that is not installed offers nothing to sweep
        return []
    return [f for f in parse_schema(cls.Params.model_json_schema()) if f.kind in SWEEPABLE]


def suggested_values(field: FieldSpec, current: Any) -> str:
    """What a new grid row starts with: every choice of a switch or a list, else the current value."""
    if field.kind == "bool":
        return "true, false"
    if field.kind == "enum" and field.choices:
        return ", ".join(str(c) for c in field.choices)
    value = current if current is not None else field.default
    return "" if value is None else json.dumps(value) if not isinstance(value, str) else value


class SweepDialog(QDialog):
    """``variant_recorded(run_id)`` for each variant that ended with a run; ``sweep_finished(status)`` at the end."""

    variant_recorded = Signal(str)
    sweep_finished = Signal(str)          # done | cancelled | failed

    def __init__(self, pipeline: Pipeline, model_path: str, *, data_path: str | None, workspace: str,
                 trust: bool = False, dims: dict[str, int] | None = None, threads: int = 0,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Sweep step settings")
        self.pipeline, self.model_path, self.data_path = pipeline, model_path, data_path
        self.workspace, self.trust, self.dims, self.threads = workspace, trust, dict(dims or {}), threads
        self.job: Any = None
        self.record: dict[str, Any] | None = None
        self.steps = [s for s in pipeline.enabled_steps()]
        self.grid = QTableWidget(0, 3)
        self.grid.setHorizontalHeaderLabels(["Step", "Parameter", "Values (comma-separated)"])
        self.grid.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.grid.setColumnWidth(0, 230)
        self.grid.setColumnWidth(1, 190)
        self.grid.verticalHeader().hide()
        add, remove = QPushButton("Add parameter"), QPushButton("Remove")
        add.clicked.connect(lambda: self.add_row())
        remove.clicked.connect(self._on_remove_clicked)
        grid_buttons = QHBoxLayout()
        grid_buttons.addWidget(add)
        grid_buttons.addWidget(remove)
        grid_buttons.addStretch(1)
        self.count_label = QLabel()
        self.count_label.setWordWrap(True)
        self.engine_combo = QComboBox()
        self.engine_combo.addItem(f"Local: a process pool on this machine ({cpu_count()} cores)", "local")
        self.engine_combo.addItem("Ray: one task per variant on a Ray cluster", "ray")
        ray_problem = engine_problem("ray")
        combo_model = self.engine_combo.model()
        if ray_problem and isinstance(combo_model, QStandardItemModel):
            item = combo_model.item(1)
            item.setEnabled(False)
            item.setToolTip(ray_problem)
        self.engine_note = QLabel(ray_problem)
        self.engine_note.setWordWrap(True)
        self.engine_note.setStyleSheet(f"color: {muted_text()};")
        self.engine_note.setVisible(bool(ray_problem))
        self.address_edit = QLineEdit()
        self.address_edit.setPlaceholderText("HOST:PORT of `ray start --head`, or auto; empty = a private local Ray")
        self.shared_edit = QLineEdit()
        self.shared_edit.setPlaceholderText("optional: a folder every Ray node can read; empty = Ray's object store")
        self.workers_spin = QSpinBox()
        self.workers_spin.setRange(0, 4096)
        self.workers_spin.setSpecialValueText("auto")
        self.workers_spin.setToolTip("Variants at once (auto: one per core locally; as many as Ray schedules)")
        form = QFormLayout()
        form.addRow("Engine:", self.engine_combo)
        if ray_problem:
            form.addRow("", self.engine_note)
        form.addRow("Ray address:", self.address_edit)
        form.addRow("Shared folder:", self.shared_edit)
        form.addRow("Workers:", self.workers_spin)
        self.table = QTableWidget(0, len(COLS))
        self.table.setHorizontalHeaderLabels(COLS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for col, tip in ((C_QUALITY, "top-1 on the evaluation data, or fidelity to the original without labels "
                                     "(see each cell's tooltip)"),
                         (C_P50, "p50 latency at the smallest batch; variants were timed while others ran beside "
                                 "them: compare with care")):
            header = self.table.horizontalHeaderItem(col)
            if header is not None:
                header.setToolTip(tip)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.run_button = self.buttons.addButton("Run sweep", QDialogButtonBox.ButtonRole.ActionRole)
        self.cancel_button = self.buttons.addButton("Cancel sweep", QDialogButtonBox.ButtonRole.ActionRole)
        self.cancel_button.setEnabled(False)
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel(f"Every combination runs as its own run of “{pipeline.name}” on "
                             f"{model_path.rsplit('/', 1)[-1]}; each appears in Results and on the Pareto chart."))
        lay.addWidget(self.grid, 1)
        lay.addLayout(grid_buttons)
        lay.addWidget(self.count_label)
        lay.addLayout(form)
        lay.addWidget(self.table, 2)
        lay.addWidget(self.status)
        lay.addWidget(self.buttons)
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self._on_timer_timeout)
        self.engine_combo.currentIndexChanged.connect(self._on_engine_changed)
        self._on_engine_changed()
        if self.steps:
            self.add_row()
        self.resize(900, 640)

    # --- grid editor -------------------------------------------------------------------
    def add_row(self, step_id: str = "", param: str = "", values: str | None = None) -> int:
        """A grid row (defaults: the first step, its first sweepable parameter, suggested values)."""
        row = self.grid.rowCount()
        self.grid.insertRow(row)
        step_combo, param_combo, values_edit = QComboBox(), QComboBox(), QLineEdit()
        for s in self.steps:
            step_combo.addItem(f"{s.id} · {s.plugin}", s.id)
        self.grid.setCellWidget(row, 0, step_combo)
        self.grid.setCellWidget(row, 1, param_combo)
        self.grid.setCellWidget(row, 2, values_edit)
        step_combo.currentIndexChanged.connect(lambda *_: self._fill_params(step_combo, param_combo, values_edit))
        param_combo.currentIndexChanged.connect(lambda *_: self._suggest(step_combo, param_combo, values_edit))
        values_edit.textChanged.connect(lambda *_: self.validate())
        if step_id:
            step_combo.setCurrentIndex(max(0, step_combo.findData(step_id)))
        self._fill_params(step_combo, param_combo, values_edit)
        if param:
            param_combo.setCurrentIndex(max(0, param_combo.findData(param)))
        if values is not None:
            values_edit.setText(values)
        self.validate()
        return row

    def _fill_params(self, step_combo: QComboBox, param_combo: QComboBox, values_edit: QLineEdit) -> None:
        step = next((s for s in self.steps if s.id == step_combo.currentData()), None)
        param_combo.blockSignals(True)
        param_combo.clear()
        for f in sweepable_fields(step.plugin) if step is not None else []:
            param_combo.addItem(f.name, f.name)
            param_combo.setItemData(param_combo.count() - 1, f.description, Qt.ItemDataRole.ToolTipRole)
        param_combo.blockSignals(False)
        self._suggest(step_combo, param_combo, values_edit)

    def _suggest(self, step_combo: QComboBox, param_combo: QComboBox, values_edit: QLineEdit) -> None:
        step = next((s for s in self.steps if s.id == step_combo.currentData()), None)
        name = param_combo.currentData()
        field = next((f for f in sweepable_fields(step.plugin) if f.name == name), None) if step else None
        if field is not None and step is not None:
            values_edit.setText(suggested_values(field, step.params.get(field.name)))
        self.validate()

    def _on_remove_clicked(self) -> None:
        row = self.grid.currentRow() if self.grid.currentRow() >= 0 else self.grid.rowCount() - 1
        if row >= 0:
            self.grid.removeRow(row)
        self.validate()

    def grid_entries(self) -> list[str]:
        """The grid as ``STEP.PARAM=V1,V2`` entries (what `slimline sweep --grid` takes)."""
        out = []
        for row in range(self.grid.rowCount()):
            step, param, values = (self.grid.cellWidget(row, c) for c in range(3))
            if isinstance(step, QComboBox) and isinstance(param, QComboBox) and isinstance(values, QLineEdit):
                if param.currentData() and values.text().strip():
                    out.append(f"{step.currentData()}.{param.currentData()}={values.text().strip()}")
        return out

    def request(self) -> Any:
        from slimline.core.engines.sweep import SweepRequest

        engine = str(self.engine_combo.currentData())
        return SweepRequest(pipeline=self.pipeline, model_path=self.model_path, data_path=self.data_path,
                            grid=self.grid_entries(), engine=engine,
                            address=(self.address_edit.text().strip() or None) if engine == "ray" else None,
                            shared_dir=(self.shared_edit.text().strip() or None) if engine == "ray" else None,
                            workers=self.workers_spin.value() or None, workspace=self.workspace, trust=self.trust,
                            dims=self.dims, threads=self.threads)

    def validate(self) -> int:
        """Variants the grid makes (0 with the engine's message when an entry is wrong)."""
        from slimline.core.engines.sweep import build_specs
        from slimline.core.errors import SlimlineError

        n = 0
        if not self.grid_entries():
            text, colour = "Add a parameter and its values to sweep.", muted_text()
        else:
            try:
                n = len(build_specs(self.request())[2])
                text, colour = f"{n} variant{'s' if n != 1 else ''}", ok_text()
            except SlimlineError as exc:
                text, colour = f"{exc.subject}: {exc.message}" if exc.subject else exc.message, flag_text()
        self.count_label.setText(text)
        self.count_label.setStyleSheet(f"color: {colour};")
        self.run_button.setEnabled(n > 0 and self.job is None)
        return n

    def _on_engine_changed(self, *_: Any) -> None:
        for w in (self.address_edit, self.shared_edit):
            w.setEnabled(self.engine_combo.currentData() == "ray")

    # --- running -----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.job is not None

    def start(self) -> None:
        """Start the sweep in a job child; rows appear as the engine queues the variants."""
        from slimline.core.engines.sweep import build_specs
        from slimline.core.errors import SlimlineError
        from slimline.core.jobs import start_task_job

        if self.running or self.validate() == 0:
            return
        req = self.request()
        try:
            specs = build_specs(req)[2]
        except SlimlineError as exc:
            self._set_status(str(exc), flag_text())
            return
        self.table.setRowCount(0)
        for i, spec in enumerate(specs):
            self._row(i, spec.title)
        self.record = None
        self.job = start_task_job("slimline.core.engines.sweep:sweep_task", req.model_dump(mode="json"),
                                  grace_s=15.0)
        lower_priority(getattr(self.job, "pid", None))  # as for runs: the window keeps the CPU it needs;
        # the local engine's workers are the job's children and inherit its priority
        self._set_busy(True)
        self._set_status(f"Running {len(specs)} variants on the {req.engine} engine…", muted_text())
        self.timer.start()

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self._set_status("Cancelling: queued variants are dropped, running ones stopped…", muted_text())

    def _set_busy(self, busy: bool) -> None:
        self.cancel_button.setEnabled(busy)
        self.run_button.setEnabled(not busy and self.validate() > 0)
        for w in (self.grid, self.engine_combo, self.address_edit, self.shared_edit, self.workers_spin):
            w.setEnabled(not busy)
        if not busy:
            self._on_engine_changed()

    def _set_status(self, text: str, colour: str) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(f"color: {colour};")

    def _row(self, i: int, label: str) -> None:
        if self.table.rowCount() <= i:
            self.table.setRowCount(i + 1)
        self.table.setItem(i, 0, QTableWidgetItem(str(i + 1)))
        self.table.setItem(i, 1, QTableWidgetItem(label))
        self.table.setItem(i, C_STATUS, QTableWidgetItem("queued"))
        bar = QProgressBar()
        bar.setRange(0, 100)
        self.table.setCellWidget(i, C_PROGRESS, bar)
        for c in (C_SIZE, C_QUALITY, C_P50, C_WALL, C_WORKER):
            self.table.setItem(i, c, QTableWidgetItem(""))

    def _cell(self, i: int, c: int) -> QTableWidgetItem:
        item = self.table.item(i, c)
        if item is None:
            item = QTableWidgetItem("")
            self.table.setItem(i, c, item)
        return item

    def status_of(self, i: int) -> str:
        item = self.table.item(i, C_STATUS)
        return item.text() if item is not None else ""

    def _on_timer_timeout(self) -> None:
        from slimline.core.engines.sweep import variant_event

        if self.job is None:
            self.timer.stop()
            return
        for ev in self.job.poll(max_events=500):
            vev = variant_event(ev)
            if vev is not None:
                self._on_variant_event(vev)
            elif isinstance(ev, (DoneEvent, FailedEvent, CancelledEvent)):
                self._on_job_ended(ev)
                return

    def _on_variant_event(self, ev: VariantEvent) -> None:
        i = ev.index
        if i >= self.table.rowCount():
            self._row(i, ev.label)
        bar = self.table.cellWidget(i, C_PROGRESS)
        if ev.kind in ("started", "progress"):
            self._cell(i, C_STATUS).setText("running")
            self._cell(i, C_WORKER).setText(ev.message if ev.kind == "progress" else ev.worker)
            self._cell(i, C_WORKER).setToolTip(ev.worker)
            if isinstance(bar, QProgressBar):
                bar.setValue(int(100 * ev.fraction))
        elif ev.kind == "finished" and ev.outcome is not None:
            self._on_variant_finished(i, ev.outcome, bar)

    def _on_variant_finished(self, i: int, outcome: Any, bar: Any) -> None:
        from slimline.core.history import load_run, run_dir

        self._cell(i, C_STATUS).setText(outcome.status)
        colour = ok_text() if outcome.ok else flag_text()
        self._cell(i, C_STATUS).setForeground(QBrush(QColor(colour)))
        self._cell(i, C_WALL).setText(f"{outcome.wall_s:.1f}")
        self._cell(i, C_WORKER).setText(outcome.reason or outcome.worker)
        self._cell(i, C_WORKER).setToolTip((outcome.reason + "\n→ " + outcome.hint) if outcome.hint
                                                else outcome.worker)
        if isinstance(bar, QProgressBar):
            bar.setValue(100 if outcome.ok else bar.value())
        if not outcome.run_id:
            return
        try:  # the figures come from the run record the engine wrote into the workspace
            record = load_run(run_dir(Path(self.workspace), outcome.run_id))
        except (OSError, ValueError):
            record = None
        final = record.results[-1] if record is not None and record.results else None
        if final is not None and outcome.ok:
            q, size = quality(final), size_bytes(final)
            self._cell(i, C_SIZE).setText("—" if size is None else fmt_bytes(size))
            self._cell(i, C_QUALITY).setText("—" if q.value is None else f"{q.value:.4f}")
            self._cell(i, C_QUALITY).setToolTip(q.label)
            self._cell(i, C_P50).setText(fmt_ms(latency_ms(final, "p50")))
        self.variant_recorded.emit(outcome.run_id)

    def _on_job_ended(self, ev: Any) -> None:
        self.timer.stop()
        self.job = None
        self._set_busy(False)
        if isinstance(ev, DoneEvent):
            self.record = ev.result or {}
            outcomes = self.record.get("outcomes", [])
            done = sum(o.get("status") == "done" for o in outcomes)
            status = str(self.record.get("status", "done"))
            for o in outcomes:  # rows the child could not report (e.g. cancelled before they started)
                if self.status_of(o["index"]) in ("queued", "running"):
                    self._cell(o["index"], C_STATUS).setText(o["status"])
                    self._cell(o["index"], C_WORKER).setText(o.get("reason", ""))
            self._set_status(f"{done}/{len(outcomes)} variants done in {self.record.get('wall_s', 0):.1f} s "
                             f"({self.record.get('engine_description', '')})"
                             + (" — cancelled" if status == "cancelled" else ""),
                             ok_text() if done == len(outcomes) else muted_text())
            self.sweep_finished.emit(status)
            return
        for i in range(self.table.rowCount()):
            if self.status_of(i) in ("queued", "running"):
                self._cell(i, C_STATUS).setText("cancelled")
        if isinstance(ev, FailedEvent):
            where = f"{ev.subject}: " if ev.subject else ""
            self._set_status(f"The sweep failed: {where}{ev.message}" + (f" → {ev.hint}" if ev.hint else ""),
                             flag_text())
            self.sweep_finished.emit("failed")
        else:
            self._set_status("The sweep was cancelled.", muted_text())
            self.sweep_finished.emit("cancelled")

    def reject(self) -> None:
        """Closing the dialog cancels a running sweep; the timer keeps polling until its variants stopped
        (finished runs stay in the history), so the window never waits for it."""
        if self.job is not None:
            self.cancel()
        super().reject()
