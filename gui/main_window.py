"""The main window: a shell of views over the session (model, data, pipeline, runs).

State lives in ``SessionModel`` and only ``SessionController`` changes it; the
window builds the views, actions and menus and wires them to the session's
signals. Views redraw from the session, never from each other's widgets.
Anything slow happens in a worker thread or the engine's child process; every
failure ends up in the banner (message + hint, details behind a button) and
leaves the previous state untouched.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEvent, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import (
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressDialog,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from slimline.core.export.variants import Variant, variants_of
from slimline.core.results import FinalEvent, RunRecord
from slimline.gui import settings as st
from slimline.gui import window_parts as parts
from slimline.gui.dialogs import AboutDialog, PreferencesDialog
from slimline.gui.elided import ElidedLabel
from slimline.gui.export_dialog import ExportDialog
from slimline.gui.inspector import InspectorView
from slimline.gui.messages import MessageBanner, UserMessage
from slimline.gui.pipeline_doc import trains
from slimline.gui.pipeline_editor import PipelineEditor
from slimline.gui.results import variant_label
from slimline.gui.run_view import RunView
from slimline.gui.session_controller import SessionController
from slimline.gui.start_view import StartView
from slimline.gui.theme import paint_in_stages
from slimline.gui.variants_view import VariantsView
from slimline.gui.workers import run_in_thread, warm_imports

if TYPE_CHECKING:
    from slimline.gui.sweep_dialog import SweepDialog

TAB_START, TAB_INSPECT, TAB_PIPELINE, TAB_RUN, TAB_RESULTS, TAB_COMPARE = range(6)
WARM_AFTER_MS = 300
SIGNALS = ("model_opened", "model_open_failed", "data_loaded", "pipeline_loaded", "run_finished", "report_saved",
           "autosaved", "restore_offered", "session_restored")


class MainWindow(QMainWindow):
    """The signals in ``SIGNALS`` are the controller's (tests, embedding): they fire after the state changed."""

    # built by window_parts.build_actions (declared here so the type checker knows them)
    act_open: QAction
    act_open_folder: QAction
    act_open_pipe: QAction
    act_open_data: QAction
    act_open_images: QAction
    act_open_text: QAction
    act_demo: QAction
    act_new_pipe: QAction
    act_save: QAction
    act_save_as: QAction
    act_export: QAction
    act_report: QAction
    act_refresh: QAction
    act_prefs: QAction
    act_quit: QAction
    act_undo: QAction
    act_redo: QAction
    act_run: QAction
    act_cancel: QAction
    act_sweep: QAction
    act_log: QAction
    act_about: QAction
    recent_menu: QMenu

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Slimline")
        self.setAcceptDrops(True)
        self.ctl = SessionController(self)
        self.session = self.ctl.session
        self.prefs, self.doc, self.controller = self.ctl.prefs, self.session.doc, self.ctl.runner
        for name in SIGNALS:
            setattr(self, name, getattr(self.ctl, name))
        self.ctl.ask_unsaved = lambda: self.ask_unsaved()
        self.ctl.ask_save_path = lambda: parts.ask_save_path(self, self.doc.path)
        self.ask_unsaved: Callable[[], str] = lambda: parts.ask_unsaved_dialog(self)
        self.trust_box: QMessageBox | None = None
        self.restore_box: QMessageBox | None = None
        self.export_dialog: ExportDialog | None = None
        self.sweep_dialog: SweepDialog | None = None
        self.open_progress: QProgressDialog | None = None
        self.banner = MessageBanner()
        self.start = StartView()
        self.inspector = InspectorView()
        self.editor = PipelineEditor(self.doc)
        self.run_view = RunView()
        self.variants = VariantsView()
        self.tabs = QTabWidget()
        for view, title in ((self.start, "Start"), (self.inspector, "Inspect"), (self.editor, "Pipeline"),
                            (self.run_view, "Run"), (self.variants, "Results")):
            self.tabs.addTab(view, title)
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.banner)
        lay.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        # elided: a model or data file with a very long name must not widen the window past the screen
        self.model_label = ElidedLabel("No model", max_chars=100)
        self.data_label = ElidedLabel("No evaluation data", max_chars=70)
        self.pipe_label = ElidedLabel("", max_chars=70)
        for w in (self.model_label, self.data_label, self.pipe_label):
            self.statusBar().addPermanentWidget(w)
        parts.build_actions(self)
        parts.fill_recent_menu(self)
        self._connect()
        from slimline.gui import diff_view, sensitivity_controller

        self.diff_view = diff_view.attach(self)                  # the Compare tab (TAB_COMPARE)
        self.sensitivity = sensitivity_controller.attach(self)   # the Inspect tab's Sensitivity panel
        self.start.set_recent(st.recent_files())
        self._update_title()
        self._update_actions()
        parts.restore_geometry(self)
        self.ctl.load_history()
        self.ctl.keeper.check_restore()

    # --- state read from the session (kept for tests, benchmarks and embedding) ---------
    handle = property(lambda self: self.session.handle)
    model_path = property(lambda self: self.session.model_path)
    trusted = property(lambda self: self.session.trusted)
    data_path = property(lambda self: self.session.data_path)
    current_run_id = property(lambda self: self.session.current_run_id)
    use_cache = property(lambda self: self.ctl.use_cache, lambda self, v: setattr(self.ctl, "use_cache", v))

    # --- commands (the controller's, under the names menus and tests use) ----------------
    def open_path(self, path: str) -> None:
        parts.open_any(self.ctl, path)

    def open_model(self, path: str, trust: bool = False, then: Callable[[], None] | None = None) -> None:
        self.ctl.open_model(path, trust, then)

    def open_data(self, path: str) -> None:
        self.ctl.open_data(path)

    def open_pipeline(self, path: str) -> None:
        self.ctl.open_pipeline(path)

    def open_demo(self) -> None:
        self.ctl.open_demo()

    def run_pipeline(self) -> None:
        self.ctl.run_pipeline()

    def run_spec_pipeline(self) -> Any:
        return self.ctl.run_spec_pipeline()

    def cancel_run(self) -> None:
        if self.controller.running:
            self.run_view.message.setText("Cancelling…")
            self.ctl.cancel_run()

    def save_report(self, path: str, run_id: str = "") -> None:
        self.ctl.save_report(path, run_id)

    def show_message(self, msg: UserMessage) -> None:
        self.banner.show_message(msg)

    def show_log(self) -> None:
        self.tabs.setCurrentIndex(TAB_RUN)
        self.run_view.show_log(True)

    def handle_dropped(self, paths: list[str]) -> None:
        parts.open_dropped(self.ctl, paths)

    # --- wiring ------------------------------------------------------------------------
    def _connect(self) -> None:
        ctl, s, r, ed, rv = self.ctl, self.session, self.controller, self.editor, self.run_view
        self.start.demo_requested.connect(ctl.open_demo)
        self.start.open_requested.connect(self.open_model_dialog)
        self.start.recent_activated.connect(self.open_path)
        self.inspector.failed.connect(self.show_message)
        self.inspector.summary.dims_changed.connect(self._on_dims_changed)
        self.doc.changed.connect(self._update_labels)
        self.doc.changed.connect(self._update_title)
        self.doc.undo_stack.cleanChanged.connect(lambda *_: self._update_title())
        rv.run_clicked.connect(ctl.run_pipeline)
        rv.cancel_clicked.connect(self.cancel_run)
        s.model_changed.connect(self._on_model_changed)
        s.data_changed.connect(self._update_labels)
        s.pipeline_changed.connect(self._on_pipeline_changed)
        s.runs_changed.connect(lambda: self.variants.set_runs(list(s.runs.values())))
        ctl.message.connect(self.show_message)
        ctl.clear_message.connect(self.banner.clear)
        ctl.status.connect(lambda text, ms: self.statusBar().showMessage(text, ms) if text
                           else self.statusBar().clearMessage())
        ctl.remembered.connect(self._on_recent_changed)
        ctl.trust_needed.connect(self._ask_trust)
        ctl.restore_offered.connect(self._offer_restore)
        ctl.pipeline_loaded.connect(lambda _p: self.tabs.setCurrentIndex(TAB_PIPELINE))
        ctl.show_step.connect(self._show_step)
        ctl.open_progress.connect(self._on_open_progress)
        ctl.run_starting.connect(self._on_run_starting)
        ctl.step_status.connect(ed.set_step_status)
        ctl.step_result.connect(ed.set_step_result)
        ctl.run_ended.connect(self._on_run_ended)
        ctl.run_recorded.connect(self._on_run_recorded)
        r.started.connect(lambda rid: rv.append_log(f"run {rid} started"))
        r.progress_changed.connect(rv.on_progress)
        r.step_started.connect(rv.on_step_started)
        r.step_result_received.connect(rv.charts.add_result)
        r.step_result_received.connect(rv.generations.add_result)
        r.step_result_received.connect(rv.lm_table.add_result)
        r.metrics_received.connect(rv.charts.add_metrics)
        r.log_received.connect(rv.append_log)
        self.tabs.currentChanged.connect(lambda i: paint_in_stages(self.tabs.widget(i)))
        self.variants.variant_selected.connect(self._on_variant_selected)
        self.variants.export_requested.connect(lambda v: self.open_export(v.key))
        self.variants.inspect_button.clicked.connect(self._on_variants_inspect_clicked)

    def _on_open_progress(self, fraction: float, text: str) -> None:
        """Opening as a job (a GGUF's first open): a progress dialog with Cancel; the window stays live."""
        dlg = self.open_progress
        if fraction < 0:
            if dlg is not None:
                self.open_progress = None
                dlg.canceled.disconnect()
                dlg.close()
                dlg.deleteLater()
            return
        if dlg is None:
            dlg = QProgressDialog(text, "Cancel", 0, 100, self)
            dlg.setWindowTitle("Opening the model")
            dlg.setObjectName("openProgress")
            dlg.setMinimumDuration(0)
            dlg.setMinimumWidth(520)
            dlg.setAutoClose(False)
            dlg.setAutoReset(False)
            dlg.canceled.connect(self.ctl.cancel_open)
            self.open_progress = dlg
            dlg.show()
        dlg.setLabelText(text)
        dlg.setValue(int(round(fraction * 100)))

    # --- session → views ---------------------------------------------------------------
    def _on_dims_changed(self, dims: dict[str, int]) -> None:
        self.session.set_dims(dims)
        self.ctl.schedule_autosave()

    def _on_recent_changed(self) -> None:
        self.start.set_recent(st.recent_files())
        parts.fill_recent_menu(self)

    def _show_step(self, step_id: str) -> None:
        self.tabs.setCurrentIndex(TAB_PIPELINE)
        self.editor.select_step(step_id)

    def _on_run_ended(self, status: str, ev: FinalEvent) -> None:
        self.run_view.on_finished(status, ev)
        self._update_actions(False)

    def _on_model_changed(self, handle: Any) -> None:
        """Another model: nothing measured on the previous one stays on screen."""
        self.inspector.set_handle(handle, self.session.rows)
        self.editor.clear_step_status()
        if not self.controller.running:  # a run in progress keeps its live view (its context names its model)
            self.run_view.clear()
        self.variants.set_model_filter(self.session.model_key, Path(self.session.model_path).name)
        # the rest in later event-loop turns: together with the table above it was ~60 ms of UI work
        QTimer.singleShot(0, self, lambda: self._show_model_editor(handle))

    def _show_model_editor(self, handle: Any) -> None:
        if handle is not self.session.handle:  # another model was opened meanwhile
            return
        self.editor.set_model(handle)
        self.model_label.setText(f"Model: {handle.name} ({handle.format}, {handle.param_count:,} params)")
        QTimer.singleShot(0, self, lambda: self._show_model_done(handle))

    def _show_model_done(self, handle: Any) -> None:
        if handle is not self.session.handle:
            return
        self.tabs.setCurrentIndex(TAB_INSPECT)
        self._update_title()
        self._update_actions()
        self.ctl.model_shown(handle)

    def _on_pipeline_changed(self) -> None:
        self.editor.clear_step_status()
        self._update_labels()

    def _on_run_starting(self, context: str) -> None:
        self.run_view.reset(context)
        self.run_view.charts.show_training(trains(self.doc.steps))
        self.editor.clear_step_status()
        self._update_actions(running=True)
        self.tabs.setCurrentIndex(TAB_RUN)

    def _on_run_recorded(self, rr: RunRecord) -> None:
        variants = variants_of(rr)
        if rr.status != "done" or len(variants) <= 1:
            return
        self.variants.select(variants[-1].key)
        # before/after histograms: the last variant in the original's format keeps tensor names
        family = self.handle.family if self.handle is not None else ""
        same = [v for v in variants[1:] if v.handle.family == family]
        self._overlay_variant(same[-1] if same else variants[-1])

    def _on_variant_selected(self, v: Variant) -> None:
        self.session.select(v)
        self.statusBar().showMessage(f"Selected variant {v.key}", 4000)

    def _on_variants_inspect_clicked(self) -> None:
        if self.session.selected is not None:
            self._overlay_variant(self.session.selected)
            self.tabs.setCurrentIndex(TAB_INSPECT)

    def _overlay_variant(self, v: Variant) -> None:
        if not v.handle.path or self.handle is None:
            return
        try:
            self.inspector.set_variant(v.handle, variant_label(v))
        except Exception as exc:  # a record from an older version: say so, do not crash
            self.statusBar().showMessage(f"Cannot overlay {v.key}: {exc}", 6000)

    def _update_labels(self) -> None:
        info = self.session.data_info
        self.data_label.setText(f"Data: {info}" if info else "No evaluation data")
        self.pipe_label.setText(f"Pipeline: {self.doc.pipeline.name} ({len(self.doc.steps)} steps)")

    def _update_title(self) -> None:
        from shiboken6 import isValid

        if not (isValid(self) and isValid(self.doc.undo_stack)):  # cleanChanged fires while tearing down
            return
        model = self.handle.name if self.handle is not None else "no model"
        pipe = Path(self.doc.path).name if self.doc.path else "unsaved pipeline"
        self.setWindowTitle(f"Slimline — {model} — {pipe}{' *' if self.doc.modified else ''}")

    def _update_actions(self, running: bool | None = None) -> None:
        running = self.controller.running if running is None else running
        self.act_run.setEnabled(not running)
        self.act_cancel.setEnabled(running)
        self.run_view.set_running(running)

    # --- questions and dialogs ---------------------------------------------------------
    def _ask_trust(self, path: str, exc: Any) -> None:
        def answered(yes: bool) -> None:
            self.trust_box = None
            if yes:
                self.ctl.open_model(path, trust=True)
            else:
                self.ctl.trust_declined(path, exc)
        self.trust_box = parts.trust_box(self, path, exc, lambda: answered(True), lambda: answered(False))

    def _offer_restore(self, restore: Any) -> None:
        def answered(yes: bool) -> None:
            self.restore_box = None
            self.ctl.keeper.restore_session(restore) if yes else self.ctl.keeper.discard_restore()
        self.restore_box = parts.restore_box(self, restore, lambda: answered(True), lambda: answered(False))

    def open_model_dialog(self) -> None:
        parts.ask_for(self, "model")

    def open_model_folder_dialog(self) -> None:
        parts.ask_for(self, "model_folder")

    def open_pipeline_dialog(self) -> None:
        parts.ask_for(self, "pipeline")

    def open_data_dialog(self) -> None:
        parts.ask_for(self, "data")

    def open_image_folder_dialog(self) -> None:
        parts.ask_for(self, "image_folder")

    def open_text_dialog(self) -> None:
        parts.ask_for(self, "text")

    def save_pipeline(self) -> bool:
        return self.ctl.save_pipeline() if self.doc.path else self.save_pipeline_as()

    def save_pipeline_as(self, path: str = "") -> bool:
        path = path or parts.ask_save_path(self, self.doc.path)
        return bool(path) and self.ctl.save_pipeline(path)

    def open_preferences(self) -> None:
        dlg = PreferencesDialog(self.prefs, self)
        dlg.finished.connect(lambda r: self.ctl.load_history() if r else None)
        dlg.open()

    def open_about(self) -> None:
        AboutDialog(self).open()

    def open_export(self, key: str = "") -> ExportDialog | None:
        dlg = parts.open_export_dialog(self, key)
        if dlg is not None:
            self.export_dialog = dlg
        return dlg

    def open_sweep(self) -> SweepDialog | None:
        dlg = parts.open_sweep_dialog(self)
        if dlg is not None:
            self.sweep_dialog = dlg
        return dlg

    def save_report_dialog(self) -> None:
        parts.ask_report(self)

    # --- window events -----------------------------------------------------------------
    def showEvent(self, event: Any) -> None:  # noqa: N802
        super().showEvent(event)
        if not getattr(self, "_warmed", False):
            self._warmed = True
            QTimer.singleShot(WARM_AFTER_MS, self, lambda: run_in_thread(warm_imports))

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802
        """Back in focus: runs made meanwhile with `slimline run` show up in Results."""
        super().changeEvent(event)
        if event.type() == QEvent.Type.ActivationChange and self.isActiveWindow():
            self.ctl.refresh_runs(force=False)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        parts.accept_paths(event)

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802
        parts.accept_paths(event)

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        paths = parts.local_paths(event)
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        self.handle_dropped(paths)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if not self.ctl.confirm_discard():
            event.ignore()
            return
        parts.save_geometry(self)
        self.ctl.keeper.shutdown()
        event.accept()
