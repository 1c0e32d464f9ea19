"""The main window's actions and menus, drag and drop, and its questions to the user.

Split out of ``main_window`` so the window itself only builds views and wires
them to the session; nothing here holds state of its own.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QByteArray, QUrl
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from slimline.gui import settings as st
from slimline.gui.dropped import classify
from slimline.gui.messages import UserMessage

if TYPE_CHECKING:
    from slimline.gui.main_window import MainWindow
    from slimline.gui.session_controller import SessionController

MODEL_FILTER = ("Models (*.onnx *.pt *.pth *.pt2 *.jit *.ts *.safetensors *.gguf *.bin *.ckpt);;"
                "ONNX (*.onnx);;TorchScript / PyTorch (*.jit *.pt *.pth *.pt2 *.ts);;"
                "Safetensors (*.safetensors);;GGUF (*.gguf);;All files (*)")
DATA_FILTER = "Data (*.npz *.npy *.csv *.tsv *.txt *.text);;All files (*)"
TEXT_FILTER = "Text, one sample per line (*.txt *.text);;All files (*)"


def _action(win: MainWindow, text: str, slot: Callable[..., Any], shortcut: Any = None, tip: str = "") -> QAction:
    a = QAction(text, win)
    if shortcut is not None:
        a.setShortcut(QKeySequence(shortcut))
    if tip:
        a.setStatusTip(tip)
        a.setToolTip(tip)
    a.triggered.connect(lambda *_: slot())
    win.addAction(a)
    return a


def build_actions(win: MainWindow) -> None:
    """Create the window's ``act_*`` actions and its menus."""
    K, ctl = QKeySequence.StandardKey, win.ctl
    w = win
    w.act_open = _action(w, "&Open model…", w.open_model_dialog, K.Open, "Open a model file or folder")
    w.act_open_folder = _action(w, "Open model &folder…", w.open_model_folder_dialog)
    w.act_open_pipe = _action(w, "Open &pipeline…", w.open_pipeline_dialog)
    w.act_open_data = _action(w, "Open evaluation &data…", w.open_data_dialog)
    w.act_open_images = _action(w, "Open &image folder (evaluation data)…", w.open_image_folder_dialog, None,
                                "A folder of images, one subfolder per class (or unlabelled images)")
    w.act_open_text = _action(w, "Open &text file (evaluation data)…", w.open_text_dialog, None,
                              "A text file, one sample per line, tokenised with the model's tokenizer")
    w.act_demo = _action(w, "Open &demo", ctl.open_demo)
    w.act_new_pipe = _action(w, "&New pipeline", ctl.new_pipeline, K.New)
    w.act_save = _action(w, "&Save pipeline", w.save_pipeline, K.Save)
    w.act_save_as = _action(w, "Save pipeline &as…", w.save_pipeline_as, "Ctrl+Shift+S")
    w.act_export = _action(w, "&Export…", w.open_export, "Ctrl+E", "Export the selected variant")
    w.act_report = _action(w, "Save &report…", w.save_report_dialog, None,
                           "Write the selected run's HTML report (results, charts, layers, exports)")
    w.act_refresh = _action(w, "Re&fresh results", ctl.refresh_runs, K.Refresh,
                            "Re-read the workspace's runs (also those made with `slimline run`)")
    w.act_prefs = _action(w, "Pre&ferences…", w.open_preferences, K.Preferences)
    w.act_quit = _action(w, "&Quit", w.close, K.Quit)
    undo_stack = ctl.session.doc.undo_stack
    w.act_undo = undo_stack.createUndoAction(w, "&Undo")
    w.act_undo.setShortcut(QKeySequence("Ctrl+Z"))
    w.act_redo = undo_stack.createRedoAction(w, "&Redo")
    w.act_redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
    w.addAction(w.act_undo)
    w.addAction(w.act_redo)
    w.act_run = _action(w, "&Run pipeline", ctl.run_pipeline, "Ctrl+R")
    w.act_cancel = _action(w, "&Cancel run", w.cancel_run, "Esc")
    w.act_sweep = _action(w, "S&weep settings…", w.open_sweep, "Ctrl+Shift+R",
                          "Run a grid of step settings as separate runs (local process pool or a Ray cluster)")
    w.act_log = _action(w, "Show &log", w.show_log, "Ctrl+L")
    w.act_about = _action(w, "&About Slimline", w.open_about)
    mb = w.menuBar()
    m = mb.addMenu("&File")
    for a in (w.act_open, w.act_open_folder, w.act_open_pipe, w.act_open_data, w.act_open_images, w.act_open_text,
              w.act_demo):
        m.addAction(a)
    w.recent_menu = m.addMenu("Open &recent")
    m.addSeparator()
    for a in (w.act_new_pipe, w.act_save, w.act_save_as):
        m.addAction(a)
    m.addSeparator()
    for a in (w.act_export, w.act_report, w.act_prefs):
        m.addAction(a)
    m.addSeparator()
    m.addAction(w.act_quit)
    m = mb.addMenu("&Edit")
    m.addAction(w.act_undo)
    m.addAction(w.act_redo)
    m = mb.addMenu("&Run")
    for a in (w.act_run, w.act_cancel, w.act_sweep, w.act_log, w.act_refresh):
        m.addAction(a)
    mb.addMenu("&Help").addAction(w.act_about)


def fill_recent_menu(win: MainWindow) -> None:
    win.recent_menu.clear()
    for p in st.recent_files():
        a = win.recent_menu.addAction(p)
        a.triggered.connect(lambda *_, p=p: win.open_path(p))
    win.recent_menu.setEnabled(bool(st.recent_files()))


# --- drag and drop ----------------------------------------------------------------------
def local_paths(event: Any) -> list[str]:
    md = event.mimeData()
    if not md.hasUrls():
        return []
    return [u.toLocalFile() for u in md.urls() if isinstance(u, QUrl) and u.isLocalFile()]


def open_any(ctl: SessionController, path: str) -> None:
    """Open whatever the path is (model, pipeline or dataset)."""
    if not Path(path).exists():
        ctl.message.emit(UserMessage("file not found", "check the path, or remove it from recent files",
                                     subject=path))
        return
    kind = classify(path)
    if kind == "pipeline":
        ctl.open_pipeline(path)
    elif kind == "dataset":
        ctl.open_data(path)
    else:
        ctl.open_model(path)


def open_dropped(ctl: SessionController, paths: list[str]) -> None:
    """Models first, so datasets dropped together are checked against the new model."""
    kinds = [(classify(p) if Path(p).exists() else "missing", p) for p in paths]
    for kind, p in kinds:
        if kind == "missing":
            ctl.message.emit(UserMessage("file not found", subject=p))
    for kind, p in kinds:
        if kind == "pipeline":
            ctl.open_pipeline(p)
    models = [p for kind, p in kinds if kind == "model"]
    datas = [p for kind, p in kinds if kind == "dataset"]
    if models:
        ctl.open_model(models[0], then=(lambda: ctl.open_data(datas[0])) if datas else None)
    elif datas:
        ctl.open_data(datas[0])


# --- questions ----------------------------------------------------------------------------
def ask_unsaved_dialog(parent: QWidget) -> str:
    box = QMessageBox(QMessageBox.Icon.Question, "Unsaved pipeline",
                      "The pipeline has unsaved changes. Save them first?", parent=parent)
    box.setStandardButtons(QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard |
                           QMessageBox.StandardButton.Cancel)
    r = box.exec()
    return {QMessageBox.StandardButton.Save: "save", QMessageBox.StandardButton.Discard: "discard"}.get(
        QMessageBox.StandardButton(r), "cancel")


def ask_save_path(parent: QWidget, current: str) -> str:
    path, _ = QFileDialog.getSaveFileName(parent, "Save pipeline", current or "pipeline.json", "Pipelines (*.json)")
    return path


def trust_box(parent: QWidget, path: str, exc: Any, on_yes: Callable[[], None],
              on_no: Callable[[], None]) -> QMessageBox:
    """Non-modal question; ``on_yes`` (reopen trusted) only on an explicit Yes."""
    box = QMessageBox(QMessageBox.Icon.Warning, "Trust this file?", f"{Path(path).name}: {exc.message}", parent=parent)
    box.setInformativeText((exc.hint + "\n\n" if exc.hint else "") +
                           "Loading it runs code stored in the file. Only trust files from people you trust.")
    yes = box.addButton("Trust and open", QMessageBox.ButtonRole.AcceptRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    box.finished.connect(lambda _r: on_yes() if box.clickedButton() is yes else on_no())
    box.open()
    return box


def restore_box(parent: QWidget, restore: Any, on_yes: Callable[[], None], on_no: Callable[[], None]) -> QMessageBox:
    box = QMessageBox(QMessageBox.Icon.Question, "Restore the last session?", restore.describe() + ".", parent=parent)
    box.setInformativeText("Restore reopens the model, the pipeline (with unsaved changes) and the evaluation "
                           "data; finished runs are in the Results tab either way. A step that was running "
                           "when the app stopped has to be run again.")
    yes = box.addButton("Restore", QMessageBox.ButtonRole.AcceptRole)
    box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
    box.setDefaultButton(yes)
    box.finished.connect(lambda _r: on_yes() if box.clickedButton() is yes else on_no())
    box.open()
    return box


def ask_open(parent: QWidget, title: str, filters: str, then: Callable[[str], None], folder: bool = False) -> None:
    """A file (or folder) dialog; ``then(path)`` unless the user cancelled."""
    path = (QFileDialog.getExistingDirectory(parent, title) if folder else
            QFileDialog.getOpenFileName(parent, title, "", filters)[0])
    if path:
        then(path)


# --- window geometry ----------------------------------------------------------------------
def restore_geometry(win: QWidget) -> None:
    s = st.settings()
    geo, state = s.value("window/geometry"), s.value("window/state")
    if isinstance(geo, QByteArray):
        win.restoreGeometry(geo)
    else:  # first start: a generous size that still fits the screen
        from PySide6.QtGui import QGuiApplication

        screen = QGuiApplication.primaryScreen()
        avail = screen.availableGeometry() if screen is not None else None
        w, h = 1500, 950
        if avail is not None and avail.width() > 0:
            w, h = min(w, int(avail.width() * 0.95)), min(h, int(avail.height() * 0.92))
        win.resize(w, h)
    if isinstance(state, QByteArray):
        win.restoreState(state)  # type: ignore[attr-defined]


def save_geometry(win: Any) -> None:
    s = st.settings()
    s.setValue("window/geometry", win.saveGeometry())
    s.setValue("window/state", win.saveState())
    s.sync()


# What each File → Open… action asks for: (dialog title, filter, session call, pick a folder).
_ASK: dict[str, tuple[str, str, str, bool]] = {
    "model": ("Open model", MODEL_FILTER, "open_model", False),
    "model_folder": ("Open model folder (e.g. Hugging Face)", "", "open_model", True),
    "pipeline": ("Open pipeline", "Pipelines (*.json);;All files (*)", "open_pipeline", False),
    "data": ("Open evaluation data", DATA_FILTER, "open_data", False),
    "image_folder": ("Open image folder (evaluation data)", "", "open_data", True),
    "text": ("Open text file (evaluation data)", TEXT_FILTER, "open_data", False),
}


def ask_for(w: Any, what: str) -> None:
    """Show the File → Open… dialog for ``what`` and hand the chosen path to the session controller."""
    title, filt, call, folder = _ASK[what]
    ask_open(w, title, filt, getattr(w.ctl, call), folder=folder)


def accept_paths(event: Any) -> None:
    """Drag enter and move alike (QDragEnterEvent is a QDragMoveEvent): accept local files only."""
    if local_paths(event):
        event.acceptProposedAction()
    else:
        event.ignore()


def open_export_dialog(w: Any, key: str = "") -> Any:
    """The export dialog on the chosen variant (default: the selected one, else the last); None if none yet."""
    from pathlib import Path

    from slimline.gui import settings as st
    from slimline.gui.export_dialog import ExportDialog
    from slimline.gui.messages import UserMessage

    vs = w.variants.variants or w.session.variants()
    if not vs:
        w.show_message(UserMessage("nothing to export yet", "run a pipeline first, then pick a variant", level="info"))
        return None
    selected = w.session.selected
    key = key or (selected.key if selected else vs[-1].key)
    if not any(v.key == key for v in vs):
        vs = w.session.variants()
    out_dir = str(st.settings().value("export/dir", str(Path.home() / "slimline-export")))
    dlg = ExportDialog(vs, key, w, default_dir=out_dir, workspace=str(w.prefs.workspace_path()),
                       trust=w.session.trusted)
    dlg.exported.connect(lambda _rec: st.settings().setValue("export/dir", dlg.out_edit.text().strip()))
    dlg.open()
    return dlg


def ask_report(w: Any) -> None:
    """File → Save report…: where to write the HTML report of the newest run."""
    from slimline.gui.messages import UserMessage

    run_id = w.ctl.report_run_id()
    if not run_id:
        w.show_message(UserMessage("no run to report on yet", "run a pipeline first", level="info"))
        return
    default = w.prefs.workspace_path() / "runs" / run_id / "report.html"
    path, _ = QFileDialog.getSaveFileName(w, "Save report", str(default), "HTML (*.html)")
    if path:
        w.ctl.save_report(path, run_id)


def open_sweep_dialog(w: Any) -> Any:
    """Run → Sweep settings…: a grid over the open pipeline's steps, on the open model and data; None if not ready."""
    from slimline.gui.messages import UserMessage
    from slimline.gui.sweep_dialog import SweepDialog

    s, ctl = w.session, w.ctl
    if s.handle is None:
        w.show_message(UserMessage("no model open", "open a model (or the demo) first", level="info"))
        return None
    if not s.doc.pipeline.enabled_steps():
        w.show_message(UserMessage("the pipeline has no enabled steps", "add steps from the palette first",
                                   level="info"))
        return None
    dlg = SweepDialog(ctl.run_spec_pipeline(), s.model_path, data_path=s.effective_data(w.prefs.default_data),
                      workspace=str(w.prefs.workspace_path()), trust=s.trusted, dims=s.dims,
                      threads=w.prefs.threads, parent=w)
    dlg.variant_recorded.connect(ctl.add_recorded_run)
    dlg.open()
    return dlg
