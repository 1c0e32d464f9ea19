"""The main window: open anything by drop/menu/CLI, inspect, edit the pipeline, run, compare, export.

The window owns the state (open model, evaluation data, pipeline document, run
controller) and routes signals between views; views never talk to each other
directly. Anything slow happens in a worker thread or the engine's child
process; every failure ends up in the banner (message + hint, details behind a
button) and leaves the previous state untouched.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QByteArray, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDragMoveEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (QFileDialog, QLabel, QMainWindow, QMessageBox, QTabWidget, QVBoxLayout, QWidget)

from slimline.gui import settings as st
from slimline.gui.dialogs import AboutDialog, PreferencesDialog
from slimline.gui.dropped import classify
from slimline.gui.export_dialog import ExportDialog
from slimline.gui.inspector import InspectorView
from slimline.gui.messages import MessageBanner, UserMessage, describe_exception
from slimline.gui.pipeline_doc import PipelineDocument
from slimline.gui.pipeline_editor import PipelineEditor
from slimline.gui.results import RunRecord, Variant, load_history, variants_from_record
from slimline.gui.run_controller import RunController
from slimline.gui.run_view import RunView
from slimline.gui.start_view import StartView
from slimline.gui.theme import paint_in_stages
from slimline.gui.variants_view import VariantsView
from slimline.gui.workers import run_in_thread

TAB_START, TAB_INSPECT, TAB_PIPELINE, TAB_RUN, TAB_RESULTS = range(5)


def _open_and_list(path: str, trust: bool) -> tuple[Any, list[Any]]:
    """Worker: open the model and read its (cheap) layer inventory in one go."""
    from slimline.core.models import open_model
    from slimline.core.stats import layer_inventory

    handle = open_model(path, trust=trust)
    return handle, layer_inventory(handle)


def _load_data(path: str, handle: Any) -> Any:
    from slimline.core.data import check_dataset, load_dataset

    ds = load_dataset(path, handle)
    if handle is not None and handle.capabilities.run:
        check_dataset(ds, handle)
    return ds


WARM_AFTER_MS = 300
AUTOSAVE_DEBOUNCE_MS = 1000


def warm_imports() -> None:
    """Worker, shortly after the window shows: import what opening a model needs.

    Imports hold the GIL; done while the user is still looking at the start
    screen, they no longer compete with the UI thread when a model opens.
    Heavy libraries (torch, onnxruntime) are not imported here: the window's
    process never needs them (pipelines run in the child process).
    """
    import slimline.core.data  # noqa: F401
    import slimline.core.history  # noqa: F401
    import slimline.core.jobs  # noqa: F401
    import slimline.core.models  # noqa: F401
    import slimline.core.stats  # noqa: F401
    from slimline.core.registry import discover

    discover()
    if os.name == "posix":  # the first spawned job starts this helper process: do it now, not mid-run
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()


class MainWindow(QMainWindow):
    """Signals are for tests and embedding: they fire after the state changed."""

    model_opened = Signal(object)
    model_open_failed = Signal(object)      # UserMessage
    data_loaded = Signal(str)
    pipeline_loaded = Signal(str)
    run_finished = Signal(str)
    report_saved = Signal(str)              # path of the HTML report
    autosaved = Signal(str)                 # path of autosave.json after each (debounced) save
    restore_offered = Signal(object)        # slimline.core.autosave.Restore after an unclean end
    session_restored = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Slimline")
        self.setAcceptDrops(True)
        self.prefs = st.Preferences.load()
        self.handle: Any = None
        self.model_path = ""
        self.trusted = False
        self.data_path = ""
        self.data_info = ""
        self.opening = False
        self.trust_box: QMessageBox | None = None
        self.ask_unsaved: Callable[[], str] = self._ask_unsaved_dialog
        self.doc = PipelineDocument(self)
        self.controller = RunController(self)
        self.current_run_id = ""
        self._run_original: dict[str, Any] | None = None   # the original's StepResult in the current run
        self.use_cache = True   # False re-computes every step (screenshots, benchmarks of a live run)
        self.session_run_ids: list[str] = []
        self.restore_box: QMessageBox | None = None
        self._autosave_timer = QTimer(self)
        self._autosave_timer.setSingleShot(True)
        self._autosave_timer.setInterval(AUTOSAVE_DEBOUNCE_MS)
        self._autosave_timer.timeout.connect(self._on_autosave_timer_timeout)
        # views
        self.banner = MessageBanner()
        self.start = StartView()
        self.inspector = InspectorView()
        self.editor = PipelineEditor(self.doc)
        self.run_view = RunView()
        self.variants = VariantsView()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.start, "Start")
        self.tabs.addTab(self.inspector, "Inspect")
        self.tabs.addTab(self.editor, "Pipeline")
        self.tabs.addTab(self.run_view, "Run")
        self.tabs.addTab(self.variants, "Results")
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.banner)
        lay.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self.model_label, self.data_label, self.pipe_label = QLabel("No model"), QLabel("No evaluation data"), QLabel("")
        for w in (self.model_label, self.data_label, self.pipe_label):
            self.statusBar().addPermanentWidget(w)
        self._build_actions()
        self._connect()
        self.start.set_recent(st.recent_files())
        self._update_title()
        self._update_actions()
        self._restore_state()
        self._load_history()
        self._check_restore()

    def showEvent(self, event: Any) -> None:  # noqa: N802
        super().showEvent(event)
        if not getattr(self, "_warmed", False):
            self._warmed = True
            QTimer.singleShot(WARM_AFTER_MS, self, lambda: run_in_thread(warm_imports))

    # --- construction ------------------------------------------------------------------
    def _action(self, text: str, slot: Callable[..., Any], shortcut: Any = None, tip: str = "") -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        if tip:
            a.setStatusTip(tip)
            a.setToolTip(tip)
        a.triggered.connect(lambda *_: slot())
        self.addAction(a)
        return a

    def _build_actions(self) -> None:
        K = QKeySequence.StandardKey
        self.act_open = self._action("&Open model…", self.open_model_dialog, K.Open, "Open a model file or folder")
        self.act_open_folder = self._action("Open model &folder…", self.open_model_folder_dialog)
        self.act_open_pipe = self._action("Open &pipeline…", self.open_pipeline_dialog)
        self.act_open_data = self._action("Open evaluation &data…", self.open_data_dialog)
        self.act_demo = self._action("Open &demo", self.open_demo)
        self.act_new_pipe = self._action("&New pipeline", self.new_pipeline, K.New)
        self.act_save = self._action("&Save pipeline", self.save_pipeline, K.Save)
        self.act_save_as = self._action("Save pipeline &as…", self.save_pipeline_as, "Ctrl+Shift+S")
        self.act_export = self._action("&Export…", self.open_export, "Ctrl+E", "Export the selected variant")
        self.act_report = self._action("Save &report…", self.save_report_dialog, None,
                                       "Write the selected run's HTML report (results, charts, layers, exports)")
        self.act_prefs = self._action("Pre&ferences…", self.open_preferences, K.Preferences)
        self.act_quit = self._action("&Quit", self.close, K.Quit)
        self.act_undo = self.doc.undo_stack.createUndoAction(self, "&Undo")
        self.act_undo.setShortcut(QKeySequence("Ctrl+Z"))
        self.act_redo = self.doc.undo_stack.createRedoAction(self, "&Redo")
        self.act_redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.addAction(self.act_undo)
        self.addAction(self.act_redo)
        self.act_run = self._action("&Run pipeline", self.run_pipeline, "Ctrl+R")
        self.act_cancel = self._action("&Cancel run", self.cancel_run, "Esc")
        self.act_log = self._action("Show &log", lambda: (self.tabs.setCurrentIndex(TAB_RUN), self.run_view.show_log(True)),
                                    "Ctrl+L")
        self.act_about = self._action("&About Slimline", self.open_about)
        mb = self.menuBar()
        m = mb.addMenu("&File")
        for a in (self.act_open, self.act_open_folder, self.act_open_pipe, self.act_open_data, self.act_demo):
            m.addAction(a)
        self.recent_menu = m.addMenu("Open &recent")
        m.addSeparator()
        for a in (self.act_new_pipe, self.act_save, self.act_save_as):
            m.addAction(a)
        m.addSeparator()
        m.addAction(self.act_export)
        m.addAction(self.act_report)
        m.addAction(self.act_prefs)
        m.addSeparator()
        m.addAction(self.act_quit)
        m = mb.addMenu("&Edit")
        m.addAction(self.act_undo)
        m.addAction(self.act_redo)
        m = mb.addMenu("&Run")
        m.addAction(self.act_run)
        m.addAction(self.act_cancel)
        m.addAction(self.act_log)
        mb.addMenu("&Help").addAction(self.act_about)
        self._fill_recent_menu()

    def _connect(self) -> None:
        self.start.demo_requested.connect(self.open_demo)
        self.start.open_requested.connect(self.open_model_dialog)
        self.start.recent_activated.connect(self.open_path)
        self.inspector.failed.connect(self._on_inspector_failed)
        self.inspector.summary.dims_changed.connect(self._on_summary_dims_changed)
        self.doc.changed.connect(self._on_doc_changed)
        for sig in (self.model_opened, self.data_loaded, self.pipeline_loaded, self.run_finished,
                    self.doc.path_changed, self.doc.undo_stack.cleanChanged):
            sig.connect(self.schedule_autosave)
        self.doc.undo_stack.cleanChanged.connect(lambda *_: self._update_title())
        self.run_view.run_clicked.connect(self.run_pipeline)
        self.run_view.cancel_clicked.connect(self.cancel_run)
        c = self.controller
        c.started.connect(self._on_controller_started)
        c.progress_changed.connect(self.run_view.on_progress)
        c.step_started.connect(self._on_controller_step_started)
        c.step_result_received.connect(self._on_controller_step_result)
        c.metrics_received.connect(self.run_view.charts.add_metrics)
        c.log_received.connect(self.run_view.append_log)
        c.finished.connect(self._on_controller_finished)
        self.tabs.currentChanged.connect(self._on_tabs_current_changed)
        self.variants.variant_selected.connect(self._on_variants_selected)
        self.variants.export_requested.connect(lambda v: self.open_export(v.key))
        self.variants.inspect_button.clicked.connect(self._on_variants_inspect_clicked)

    # --- state persistence -------------------------------------------------------------
    def _restore_state(self) -> None:
        s = st.settings()
        geo, state = s.value("window/geometry"), s.value("window/state")
        if isinstance(geo, QByteArray):
            self.restoreGeometry(geo)
        else:  # first start: a generous size that still fits the screen
            from PySide6.QtGui import QGuiApplication

            screen = QGuiApplication.primaryScreen()
            avail = screen.availableGeometry() if screen is not None else None
            w, h = 1500, 950
            if avail is not None and avail.width() > 0:
                w, h = min(w, int(avail.width() * 0.95)), min(h, int(avail.height() * 0.92))
            self.resize(w, h)
        if isinstance(state, QByteArray):
            self.restoreState(state)

    def _save_state(self) -> None:
        s = st.settings()
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.sync()

    def _load_history(self) -> None:
        """Earlier runs from the workspace are variants too (every run is kept)."""
        ws = self.prefs.workspace_path()
        if not (ws / "runs").is_dir():
            return
        run_in_thread(load_history, ws, on_done=self.variants.set_runs,
                      on_error=lambda e, tb: self.statusBar().showMessage(f"Could not read run history: {e}", 8000))

    # --- messages ----------------------------------------------------------------------
    def show_message(self, msg: UserMessage) -> None:
        self.banner.show_message(msg)

    def show_exception(self, exc: BaseException, tb: str | None = None) -> UserMessage:
        msg = describe_exception(exc, tb=tb)
        self.show_message(msg)
        return msg

    # --- opening -----------------------------------------------------------------------
    def open_path(self, path: str) -> None:
        """Open whatever the path is (model, pipeline or dataset)."""
        if not Path(path).exists():
            self.show_message(UserMessage("file not found", "check the path, or remove it from recent files",
                                          subject=path))
            return
        kind = classify(path)
        if kind == "pipeline":
            self.open_pipeline(path)
        elif kind == "dataset":
            self.open_data(path)
        else:
            self.open_model(path)

    def open_model(self, path: str, trust: bool = False, then: Callable[[], None] | None = None) -> None:
        """Open in a worker; on success replace the current model, on failure change nothing."""
        self.opening = True
        self.statusBar().showMessage(f"Opening {Path(path).name}…")
        run_in_thread(_open_and_list, str(path), trust,
                      on_done=lambda res: self._on_model_opened(str(path), trust, res, then),
                      on_error=lambda e, tb: self._on_model_open_failed(str(path), e, tb))

    def _on_model_opened(self, path: str, trust: bool, res: tuple[Any, list[Any]], then: Callable[[], None] | None) -> None:
        handle, rows = res
        self.opening = False
        self.banner.clear()
        self.handle, self.model_path, self.trusted = handle, path, trust
        self.inspector.set_handle(handle, rows)
        # the rest in later event-loop turns: together with the table above it was ~60 ms of UI work
        QTimer.singleShot(0, self, lambda: self._on_model_opened_editor(path, handle, then))

    def _on_model_opened_editor(self, path: str, handle: Any, then: Callable[[], None] | None) -> None:
        if handle is not self.handle:  # another model was opened meanwhile
            return
        self.editor.set_model(handle)
        self.model_label.setText(f"Model: {handle.name} ({handle.format}, {handle.param_count:,} params)")
        self._remember(path)
        QTimer.singleShot(0, self, lambda: self._on_model_opened_shown(handle, then))

    def _on_model_opened_shown(self, handle: Any, then: Callable[[], None] | None) -> None:
        if handle is not self.handle:
            return
        self.statusBar().showMessage(f"Opened {handle.name}", 5000)
        self.tabs.setCurrentIndex(TAB_INSPECT)
        self._update_title()
        self._update_actions()
        if then is not None:
            then()
        elif not self.data_path and self.prefs.default_data:
            self._open_default_data()
        self.model_opened.emit(handle)

    def _open_default_data(self) -> None:
        """Preferences → default evaluation data, for a model opened without any."""
        path = self.prefs.default_data
        if not Path(path).exists():
            self.show_message(UserMessage("the default evaluation data is missing", "fix it in Preferences",
                                          subject=path, level="warning"))
            return
        self.open_data(path)

    def _on_model_open_failed(self, path: str, exc: BaseException, tb: str) -> None:
        self.opening = False
        self.statusBar().clearMessage()
        from slimline.core.errors import UntrustedFileError

        if isinstance(exc, UntrustedFileError):
            self._ask_trust(path, exc)
            return
        msg = self.show_exception(exc, tb)
        self.model_open_failed.emit(msg)

    def _ask_trust(self, path: str, exc: Any) -> None:
        """Non-modal question; reopen with trust=True only on an explicit Yes."""
        box = QMessageBox(QMessageBox.Icon.Warning, "Trust this file?",
                          f"{Path(path).name}: {exc.message}", parent=self)
        box.setInformativeText((exc.hint + "\n\n" if exc.hint else "") +
                               "Loading it runs code stored in the file. Only trust files from people you trust.")
        yes = box.addButton("Trust and open", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)

        def done(_r: int) -> None:
            self.trust_box = None
            if box.clickedButton() is yes:
                self.open_model(path, trust=True)
            else:
                self.show_message(UserMessage(str(exc.message), "not opened: the file was not trusted",
                                              subject=Path(path).name, level="warning"))
                self.model_open_failed.emit(self.banner.current)
        box.finished.connect(done)
        self.trust_box = box
        box.open()

    def open_pipeline(self, path: str) -> None:
        if not self._confirm_discard():
            return
        try:
            self.doc.load(path)
        except Exception as exc:  # PipelineError names the step and field
            self.show_exception(exc)
            return
        self.banner.clear()
        self._remember(path)
        if self.doc.pipeline.evaluation.data and not self.data_path and Path(self.doc.pipeline.evaluation.data).exists():
            self.data_info = f"{Path(self.doc.pipeline.evaluation.data).name} (from pipeline)"
            self._update_labels()
        self.editor.clear_step_status()
        self.tabs.setCurrentIndex(TAB_PIPELINE)
        self.pipeline_loaded.emit(path)

    def open_data(self, path: str) -> None:
        self.statusBar().showMessage(f"Loading {Path(path).name}…")
        run_in_thread(_load_data, path, self.handle, on_done=lambda ds: self._on_data_loaded(path, ds),
                      on_error=lambda e, tb: (self.statusBar().clearMessage(), self.show_exception(e, tb)))

    def _on_data_loaded(self, path: str, ds: Any) -> None:
        self.banner.clear()
        self.data_path = path
        n = len(ds) if hasattr(ds, "__len__") else "?"
        kind = getattr(ds, "kind", "real")
        labels = "labelled" if getattr(ds, "labels", None) is not None else "no labels (fidelity only)"
        self.data_info = f"{getattr(ds, 'name', Path(path).name)} (n={n}, {labels}{', random' if kind == 'random' else ''})"
        self._update_labels()
        self.statusBar().showMessage(f"Evaluation data: {self.data_info}", 5000)
        self._remember(path)
        self.data_loaded.emit(path)

    def open_demo(self) -> None:
        """The demo model, its evaluation data and the demo pipeline, in one click."""
        from slimline.core.demo import demo_paths

        paths = demo_paths()
        if paths["pipeline"].exists() and (not self.doc.modified or self._confirm_discard()):
            try:
                self.doc.load(str(paths["pipeline"]))
            except Exception as exc:
                self.show_exception(exc)

        def after() -> None:
            if paths["eval"].exists():
                self.open_data(str(paths["eval"]))
        self.open_model(str(paths["torch"]), then=after)

    # --- dialogs -----------------------------------------------------------------------
    def open_model_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open model", "", "Models (*.onnx *.pt *.pth *.pt2 *.ts *.safetensors "
                                              "*.bin *.ckpt);;All files (*)")
        if path:
            self.open_model(path)

    def open_model_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open model folder (e.g. Hugging Face)")
        if path:
            self.open_model(path)

    def open_pipeline_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open pipeline", "", "Pipelines (*.json);;All files (*)")
        if path:
            self.open_pipeline(path)

    def open_data_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open evaluation data", "", "Data (*.npz *.csv *.txt);;All files (*)")
        if path:
            self.open_data(path)

    def open_preferences(self) -> None:
        dlg = PreferencesDialog(self.prefs, self)
        dlg.finished.connect(lambda r: self._load_history() if r else None)
        dlg.open()

    def open_about(self) -> None:
        AboutDialog(self).open()

    def open_export(self, key: str = "") -> ExportDialog | None:
        vs = self.variants.variants
        if not vs:
            self.show_message(UserMessage("nothing to export yet", "run a pipeline first, then pick a variant",
                                          level="info"))
            return None
        key = key or (self.variants.selected.key if self.variants.selected else vs[-1].key)
        dlg = ExportDialog(vs, key, self, default_dir=st.settings().value("export/dir", str(Path.home() / "slimline-export")),
                           workspace=str(self.prefs.workspace_path()), trust=self.trusted)
        dlg.exported.connect(lambda _rec: st.settings().setValue("export/dir", dlg.out_edit.text().strip()))
        self.export_dialog = dlg
        dlg.open()
        return dlg

    # --- report ------------------------------------------------------------------------
    def report_run_id(self) -> str:
        """The run of the selected variant, else the latest run."""
        if self.variants.selected is not None:
            return self.variants.selected.run_id
        return max(self.variants.runs, default="")

    def save_report_dialog(self) -> None:
        run_id = self.report_run_id()
        if not run_id:
            self.show_message(UserMessage("no run to report on yet", "run a pipeline first", level="info"))
            return
        default = self.prefs.workspace_path() / "runs" / run_id / "report.html"
        path, _ = QFileDialog.getSaveFileName(self, "Save report", str(default), "HTML (*.html)")
        if path:
            self.save_report(path, run_id)

    def save_report(self, path: str, run_id: str = "") -> None:
        """Write the HTML report in a child process (layer statistics load the models)."""
        from slimline.gui.export_worker import ExportProcess

        run_id = run_id or self.report_run_id()
        run_dir = self.prefs.workspace_path() / "runs" / run_id
        if not (run_dir / "run.json").is_file():
            self.show_message(UserMessage("the run record is missing", "pick another run", subject=str(run_dir)))
            return
        job = ExportProcess({"kind": "report", "run_dir": str(run_dir), "out": path})
        self.statusBar().showMessage(f"Writing the report of run {run_id}…")
        timer = QTimer(self)
        timer.setInterval(100)

        def poll() -> None:
            for ev in job.poll():
                if ev["type"] == "progress":
                    self.statusBar().showMessage(f"Report: {ev.get('message', '')}…")
                elif ev["type"] in ("done", "failed", "cancelled"):
                    timer.stop()
                    timer.deleteLater()
                    if ev["type"] == "done":
                        self.statusBar().showMessage(f"Report saved to {ev['record']['path']}", 8000)
                        self.report_saved.emit(ev["record"]["path"])
                    else:
                        self.statusBar().clearMessage()
                        self.show_message(UserMessage(str(ev.get("message", "the report failed")),
                                                      str(ev.get("hint", "")), subject=path,
                                                      details=str(ev.get("details", ""))))
        timer.timeout.connect(poll)
        timer.start()
        self._report_job = (job, timer)

    # --- pipeline files ----------------------------------------------------------------
    def _ask_unsaved_dialog(self) -> str:
        box = QMessageBox(QMessageBox.Icon.Question, "Unsaved pipeline",
                          "The pipeline has unsaved changes. Save them first?", parent=self)
        box.setStandardButtons(QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard |
                               QMessageBox.StandardButton.Cancel)
        r = box.exec()
        return {QMessageBox.StandardButton.Save: "save", QMessageBox.StandardButton.Discard: "discard"}.get(
            QMessageBox.StandardButton(r), "cancel")

    def _confirm_discard(self) -> bool:
        if not self.doc.modified:
            return True
        answer = self.ask_unsaved()
        if answer == "save":
            return self.save_pipeline()
        return answer == "discard"

    def new_pipeline(self) -> None:
        if self._confirm_discard():
            self.doc.new()
            self.editor.clear_step_status()

    def save_pipeline(self) -> bool:
        if not self.doc.path:
            return self.save_pipeline_as()
        return self._save_to(self.doc.path)

    def save_pipeline_as(self, path: str = "") -> bool:
        if not path:
            path, _ = QFileDialog.getSaveFileName(self, "Save pipeline", self.doc.path or "pipeline.json",
                                                  "Pipelines (*.json)")
        return bool(path) and self._save_to(path)

    def _save_to(self, path: str) -> bool:
        try:
            self.doc.save(path)
        except Exception as exc:
            self.show_exception(exc)
            return False
        self._remember(path)
        self.statusBar().showMessage(f"Saved {path}", 4000)
        return True

    # --- running -----------------------------------------------------------------------
    def effective_data(self) -> str | None:
        return self.data_path or self.doc.pipeline.evaluation.data or self.prefs.default_data or None

    def run_pipeline(self) -> None:
        if self.controller.running:
            return
        if self.handle is None:
            self.show_message(UserMessage("no model open", "open a model (or the demo) first", level="info"))
            return
        if not self.doc.pipeline.enabled_steps():
            self.show_message(UserMessage("the pipeline has no enabled steps",
                                          "add steps from the palette in the Pipeline tab", level="info"))
            return
        errors = [(sid, p) for sid, ps in self.editor.problems.items() for p in ps if p.severity == "error"]
        if errors:
            sid, p = errors[0]
            self.show_message(UserMessage(str(p), p.fix or "fix the step in the Pipeline tab", subject=f"step {sid}"))
            self.tabs.setCurrentIndex(TAB_PIPELINE)
            self.editor.select_step(sid)
            return
        self.banner.clear()
        data = self.effective_data()
        ws = self.prefs.workspace_path()
        device = self.prefs.device or f"{self.doc.pipeline.evaluation.device} (pipeline)"
        ctx = (f"Model {self.handle.name}; evaluation data: {Path(data).name if data else 'none (random inputs: latency only)'}; "
               f"threads: {self.prefs.threads or 'all'}; device: {device}; workspace: {ws}")
        self.run_view.reset(ctx)
        self._run_original = None
        self.editor.clear_step_status()
        self.run_view.set_running(True)
        self._update_actions(running=True)
        self.tabs.setCurrentIndex(TAB_RUN)
        self.controller.start(self.run_spec_pipeline(), self.model_path, data_path=data,
                              workspace=str(ws), trust=self.trusted, threads=self.prefs.threads,
                              dims=self.inspector.summary.dims() or None, use_cache=self.use_cache)

    def run_spec_pipeline(self) -> Any:
        """The pipeline as it will run: a copy, with the preferred device when the user chose one."""
        pipe = self.doc.pipeline.model_copy(deep=True)
        if self.prefs.device:
            pipe.evaluation.device = self.prefs.device
        return pipe

    def cancel_run(self) -> None:
        if self.controller.running:
            self.run_view.message.setText("Cancelling…")
            self.controller.cancel()

    def _on_controller_started(self, run_id: str) -> None:
        self.current_run_id = run_id
        if run_id and run_id not in self.session_run_ids:
            self.session_run_ids.append(run_id)
        self.schedule_autosave()
        self.run_view.append_log(f"run {run_id} started")

    def _on_controller_step_started(self, ev: dict[str, Any]) -> None:
        self.run_view.on_step_started(ev)
        sid = str(ev.get("step_id"))
        if sid != "original":
            self.editor.set_step_status(sid, "running…")

    def _on_controller_step_result(self, res: dict[str, Any]) -> None:
        self.run_view.charts.add_result(res)
        sid = str(res.get("step_id"))
        if sid == "original":
            self._run_original = res
        else:
            self.editor.set_step_result(sid, res, self._run_original)

    def _on_controller_finished(self, status: str, ev: dict[str, Any]) -> None:
        self.run_view.on_finished(status, ev)
        self._update_actions(running=False)
        if status == "failed":
            self.show_message(UserMessage(str(ev.get("message", "run failed")), str(ev.get("hint", "")),
                                          subject=f"step {ev['step_id']}" if ev.get("step_id") else "",
                                          details=str(ev.get("details", ""))))
            if ev.get("step_id") in self.editor.lane.cards:
                self.editor.set_step_status(ev["step_id"], "failed", ["failed"])
        self._add_run_record(self.current_run_id)
        self.run_finished.emit(status)

    def _add_run_record(self, run_id: str) -> None:
        if not run_id:
            return
        from slimline.core.history import load_run, run_dir

        try:
            record = load_run(run_dir(self.prefs.workspace_path(), run_id))
        except (OSError, ValueError):
            return
        rr: RunRecord = variants_from_record(record)
        self.variants.add_run(rr)
        if rr.status == "done" and len(rr.variants) > 1:
            last = rr.variants[-1]
            self.variants.select(last.key)
            # before/after histograms: the last variant in the original's format keeps tensor names
            family = self.handle.family if self.handle is not None else ""
            same = [v for v in rr.variants[1:] if v.model.get("family") == family]
            self._overlay_variant(same[-1] if same else last)

    # --- results -----------------------------------------------------------------------
    def _on_variants_selected(self, v: Variant) -> None:
        self.statusBar().showMessage(f"Selected variant {v.key}", 4000)

    def _on_variants_inspect_clicked(self) -> None:
        if self.variants.selected is not None:
            self._overlay_variant(self.variants.selected)
            self.tabs.setCurrentIndex(TAB_INSPECT)

    def _overlay_variant(self, v: Variant) -> None:
        if not v.model or self.handle is None:
            return
        from slimline.core.handle import ModelHandle

        try:
            self.inspector.set_variant(ModelHandle.model_validate(v.model), v.label)
        except Exception as exc:  # a record from an older version: say so, do not crash
            self.statusBar().showMessage(f"Cannot overlay {v.key}: {exc}", 6000)

    # --- misc slots --------------------------------------------------------------------
    def _on_tabs_current_changed(self, index: int) -> None:
        paint_in_stages(self.tabs.widget(index))

    def _on_inspector_failed(self, msg: UserMessage) -> None:
        self.show_message(msg)

    def _on_summary_dims_changed(self, dims: dict[str, int]) -> None:
        if self.handle is not None:
            self.handle = self.handle.with_dims(**dims)
        self.schedule_autosave()

    def _on_doc_changed(self) -> None:
        self._update_title()
        self._update_labels()

    def _remember(self, path: str) -> None:
        st.add_recent_file(str(Path(path).resolve()))
        self.start.set_recent(st.recent_files())
        self._fill_recent_menu()

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for p in st.recent_files():
            a = self.recent_menu.addAction(p)
            a.triggered.connect(lambda *_, p=p: self.open_path(p))
        self.recent_menu.setEnabled(bool(st.recent_files()))

    def _update_labels(self) -> None:
        self.data_label.setText(f"Data: {self.data_info}" if self.data_info else "No evaluation data")
        name = self.doc.pipeline.name
        self.pipe_label.setText(f"Pipeline: {name} ({len(self.doc.steps)} steps)")

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

    # --- drag and drop anywhere ---------------------------------------------------------
    @staticmethod
    def _local_paths(event: Any) -> list[str]:
        md = event.mimeData()
        if not md.hasUrls():
            return []
        return [u.toLocalFile() for u in md.urls() if isinstance(u, QUrl) and u.isLocalFile()]

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        if self._local_paths(event):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802
        self.dragEnterEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        paths = self._local_paths(event)
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        self.handle_dropped(paths)

    def handle_dropped(self, paths: list[str]) -> None:
        """Models first, so datasets dropped together are checked against the new model."""
        kinds = [(classify(p) if Path(p).exists() else "missing", p) for p in paths]
        for kind, p in kinds:
            if kind == "missing":
                self.show_message(UserMessage("file not found", subject=p))
        for kind, p in kinds:
            if kind == "pipeline":
                self.open_pipeline(p)
        models = [p for kind, p in kinds if kind == "model"]
        datas = [p for kind, p in kinds if kind == "dataset"]
        if models:
            self.open_model(models[0], then=(lambda: self.open_data(datas[0])) if datas else None)
        elif datas:
            self.open_data(datas[0])

    # --- closing -----------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if not self._confirm_discard():
            event.ignore()
            return
        if self.controller.running:
            self.controller.cancel()
        self._save_state()
        self._autosave_timer.stop()
        try:  # a normal exit: the next start offers no restore (a small file; fine to block at exit)
            from slimline.core import autosave

            autosave.mark_clean_shutdown(self.prefs.workspace_path(), self.workspace_state())
        except Exception as exc:  # never keep the window from closing
            print(f"slimline: could not record the clean shutdown: {exc}", file=__import__("sys").stderr)
        event.accept()

    # --- autosave / restore ------------------------------------------------------------
    def workspace_state(self) -> Any:
        """What is open now, as slimline.core.autosave.WorkspaceState (cheap: no file access)."""
        from slimline.core.autosave import WorkspaceState

        running = self.current_run_id if self.controller.running else ""
        return WorkspaceState(model_path=self.model_path, trusted=self.trusted,
                              pipeline=self.doc.pipeline.model_dump(mode="json"), pipeline_path=self.doc.path,
                              pipeline_modified=self.doc.modified, data_path=self.data_path,
                              dims=dict(self.inspector.summary.dims() or {}), run_ids=list(self.session_run_ids),
                              running_run_id=running)

    def schedule_autosave(self, *_: Any) -> None:
        """Every change restarts a 1 s timer; the write happens on a worker thread."""
        from shiboken6 import isValid

        if isValid(self._autosave_timer):  # cleanChanged also fires while the window is torn down
            self._autosave_timer.start()

    def _on_autosave_timer_timeout(self) -> None:
        try:
            from slimline.core import autosave
        except ImportError:  # an engine without autosave: nothing to do
            return
        state = self.workspace_state()
        run_in_thread(autosave.save_state, self.prefs.workspace_path(), state,
                      on_done=lambda path: self.autosaved.emit(str(path)),
                      on_error=lambda e, tb: self.statusBar().showMessage(f"Autosave failed: {e}", 8000))

    def _check_restore(self) -> None:
        try:
            from slimline.core import autosave
        except ImportError:
            return
        run_in_thread(autosave.pending_restore, self.prefs.workspace_path(), on_done=self._on_restore_found,
                      on_error=lambda e, tb: None)

    def _on_restore_found(self, restore: Any) -> None:
        if restore is None:
            return
        self.restore_offered.emit(restore)
        box = QMessageBox(QMessageBox.Icon.Question, "Restore the last session?", restore.describe() + ".",
                          parent=self)
        box.setInformativeText("Restore reopens the model, the pipeline (with unsaved changes) and the evaluation "
                               "data; finished runs are in the Results tab either way. A step that was running "
                               "when the app stopped has to be run again.")
        yes = box.addButton("Restore", QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
        box.setDefaultButton(yes)

        def done(_r: int) -> None:
            self.restore_box = None
            if box.clickedButton() is yes:
                self.restore_session(restore)
            else:
                from slimline.core import autosave

                autosave.discard(self.prefs.workspace_path())
        box.finished.connect(done)
        self.restore_box = box
        box.open()

    def _on_runs_restored(self, records: list[dict[str, Any]]) -> None:
        """The session's runs, a run cut short by the crash marked "interrupted"."""
        for rec in records:
            self.variants.add_run(variants_from_record(rec))

    def restore_session(self, restore: Any) -> None:
        """Reopen what the last session had open; each part that fails says so and the rest goes on."""
        from slimline.core import autosave
        from slimline.core.pipeline import parse_pipeline

        state = restore.state
        self.session_run_ids = list(state.run_ids)
        if state.pipeline:
            try:
                self.doc.restore(parse_pipeline(state.pipeline), state.pipeline_path, state.pipeline_modified)
                self.editor.clear_step_status()
            except Exception as exc:
                self.show_exception(exc)
        ws = self.prefs.workspace_path()
        run_in_thread(autosave.restore_runs, ws, state, on_done=self._on_runs_restored, on_error=lambda e, tb: None)
        data = state.data_path if state.data_path and Path(state.data_path).exists() else ""

        def after_model() -> None:
            if data:
                self.open_data(data)
            self.session_restored.emit()
        if state.model_path and Path(state.model_path).exists():
            self.open_model(state.model_path, then=after_model)  # asks again before trusting a pickle
        else:
            if state.model_path:
                self.show_message(UserMessage("the model of the last session is gone", "open it again",
                                              subject=state.model_path, level="warning"))
            if data:
                self.open_data(data)
            self.session_restored.emit()
