"""Everything the window does to the session: open, run, record runs, report, autosave and restore.

Slow work runs in a worker thread (opening, loading data, reading run history)
or in the engine's child process (runs, reports). Results land in the
``SessionModel``; failures go out as ``message`` (a UserMessage for the banner)
and leave the previous state untouched. Questions for the user (trust a pickle,
restore the last session, save unsaved changes) go out as signals or the
``ask_unsaved`` callable, so this class owns no widgets.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from slimline.core.results import (
    CancelledEvent,
    DoneEvent,
    FailedEvent,
    FinalEvent,
    ProgressEvent,
    RunRecord,
    StepResult,
    StepStartedEvent,
)
from slimline.gui import settings as st
from slimline.gui.messages import UserMessage, describe_exception
from slimline.gui.results import load_history
from slimline.gui.run_controller import RunController
from slimline.gui.session import SessionModel
from slimline.gui.session_keeper import SessionKeeper
from slimline.gui.workers import run_in_thread

REFRESH_MIN_S = 2.0   # focus-in refreshes of the run list at most this often


def _open_and_list(path: str, trust: bool) -> tuple[Any, list[Any]]:
    """Worker: open the model and read its (cheap) layer inventory in one go."""
    from slimline.core.models import open_model
    from slimline.core.stats import layer_inventory

    handle = open_model(path, trust=trust)
    return handle, layer_inventory(handle)


def _window_settings(evaluation: Any) -> tuple[Any, ...]:
    """What decides a text file's token windows (the LM settings the data was cut with)."""
    lm = evaluation.lm
    return evaluation.task, lm.window_length, lm.window_count, lm.stride


def _load_data(path: str, handle: Any, evaluation: Any = None) -> Any:
    """The dataset, or for a language model and a text file its token windows (as the run will cut them)."""
    from slimline.core.data import check_dataset, load_dataset
    from slimline.core.lm.evaluate import lm_text_task, text_bundle

    if evaluation is not None and handle is not None and handle.capabilities.run \
            and lm_text_task(evaluation, handle, path) is not None:
        return text_bundle(evaluation, handle, path, None).text
    ds = load_dataset(path, handle)
    if handle is not None and handle.capabilities.run:
        check_dataset(ds, handle)
    return ds


class SessionController(QObject):
    """Signals: the window's public ones (tests, embedding) plus requests to the views."""

    model_opened = Signal(object)
    model_open_failed = Signal(object)      # UserMessage
    data_loaded = Signal(str)
    pipeline_loaded = Signal(str)
    run_finished = Signal(str)
    report_saved = Signal(str)
    autosaved = Signal(str)
    restore_offered = Signal(object)        # slimline.core.autosave.Restore after an unclean end
    session_restored = Signal()
    # to the views
    message = Signal(object)                # UserMessage for the banner
    clear_message = Signal()
    status = Signal(str, int)               # status-bar text, timeout ms (0 = until replaced)
    trust_needed = Signal(str, object)      # path, UntrustedFileError
    remembered = Signal()                   # the recent-files list changed
    run_starting = Signal(str)              # context line for the run view
    run_ended = Signal(str, object)         # status, the final event (DoneEvent | FailedEvent | CancelledEvent)
    run_recorded = Signal(object)           # slimline.core.results.RunRecord of the run that just ended
    show_step = Signal(str)                 # a step the user must fix
    open_progress = Signal(float, str)      # opening as a job (a GGUF's first open): fraction (< 0: ended), text
    step_status = Signal(str, str, list)    # step id, text, flags
    step_result = Signal(str, object, object)  # step id, StepResult, the original's StepResult (or None)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.prefs = st.Preferences.load()
        self.session = SessionModel(self)
        self.runner = RunController(self)
        self.use_cache = True   # False re-computes every step (screenshots, benchmarks of a live run)
        self.opening = False
        self.ask_unsaved: Callable[[], str] = lambda: "cancel"    # "save" | "discard" | "cancel"
        self.ask_save_path: Callable[[], str] = lambda: ""        # a file name to save an unnamed pipeline to
        self._then: dict[int, Callable[[], None] | None] = {}
        self._history_loading = False
        self._history_at = 0.0
        self._report_job: Any = None
        self._run_model = ""   # the model the current run started from: its step figures are not another's
        self.keeper = SessionKeeper(self)
        self._data_cut: tuple[Any, ...] = ()
        self._open_job: Any = None
        self._recut = QTimer(self)
        self._recut.setSingleShot(True)
        self._recut.setInterval(400)
        self._recut.timeout.connect(self._on_recut_timeout)
        self.session.doc.changed.connect(self._on_doc_changed)
        s, r = self.session, self.runner
        for sig in (self.model_opened, self.data_loaded, self.pipeline_loaded, self.run_finished,
                    s.doc.path_changed, s.doc.undo_stack.cleanChanged):
            sig.connect(self.schedule_autosave)
        r.started.connect(self._on_run_started)
        r.step_started.connect(self._on_step_started)
        r.step_result_received.connect(self._on_step_result)
        r.finished.connect(self._on_run_finished)

    def show_exception(self, exc: BaseException, tb: str | None = None) -> UserMessage:
        msg = describe_exception(exc, tb=tb)
        self.message.emit(msg)
        return msg

    def remember(self, path: str) -> None:
        st.add_recent_file(str(Path(path).resolve()))
        self.remembered.emit()

    # --- model ---------------------------------------------------------------------------
    def open_model(self, path: str, trust: bool = False, then: Callable[[], None] | None = None) -> None:
        """Open in a worker; on success replace the current model, on failure change nothing.

        A GGUF not yet dequantized is first turned into its float folder by a job in a child process
        (progress and cancel through ``open_progress`` / ``cancel_open``): numpy dequantizing in a
        thread held the GIL long enough to freeze the window.
        """
        self.opening = True
        self.status.emit(f"Opening {Path(path).name}…", 0)
        if str(path).lower().endswith(".gguf"):
            from slimline.core.models.gguf import cached_folder

            run_in_thread(cached_folder, str(path),
                          on_done=lambda folder: self._open_gguf(str(path), trust, then, folder),
                          on_error=lambda e, tb: self._on_model_open_failed(str(path), e, tb))
            return
        self._open_in_thread(str(path), trust, then)

    def _open_in_thread(self, path: str, trust: bool, then: Callable[[], None] | None) -> None:
        run_in_thread(_open_and_list, path, trust,
                      on_done=lambda res: self._on_model_opened(path, trust, res, then),
                      on_error=lambda e, tb: self._on_model_open_failed(path, e, tb))

    def _open_gguf(self, path: str, trust: bool, then: Callable[[], None] | None, folder: str | None) -> None:
        """Cached: open it now. Else dequantize in a child process first, then open the folder it built."""
        from slimline.core.errors import ModelLoadError
        from slimline.core.jobs import start_task_job
        from slimline.core.models.gguf import DEQUANTIZE_TASK, remove_partial_builds

        if folder is not None:
            self._open_in_thread(path, trust, then)
            return
        job = start_task_job(DEQUANTIZE_TASK, {"path": path})
        self._open_job = job
        name = Path(path).name
        self.open_progress.emit(0.0, f"{name}: starting (a GGUF is dequantized to float32 once, then cached)")
        timer = QTimer(self)
        timer.setInterval(100)

        def poll() -> None:
            for ev in job.poll():
                if isinstance(ev, ProgressEvent):
                    self.open_progress.emit(ev.fraction, f"{name}: {ev.message}")
                    self.status.emit(f"Opening {name}: {ev.message}…", 0)
                    continue
                if not isinstance(ev, (DoneEvent, FailedEvent, CancelledEvent)):
                    continue
                timer.stop()
                timer.deleteLater()
                self._open_job = None
                self.open_progress.emit(-1.0, "")
                if isinstance(ev, DoneEvent):
                    self._open_in_thread(path, trust, then)
                elif isinstance(ev, FailedEvent):
                    exc = ModelLoadError(ev.message or "dequantizing the GGUF failed", hint=ev.hint,
                                         subject=ev.subject or path)
                    self._on_model_open_failed(path, exc, ev.details or "")
                else:
                    if job.pid is not None:
                        remove_partial_builds(job.pid)
                    self.opening = False
                    self.status.emit(f"Opening {name} cancelled; nothing was kept", 5000)
                return
        timer.timeout.connect(poll)
        timer.start()

    def cancel_open(self) -> None:
        """Stop dequantizing a GGUF (cooperative between phases, then the process is terminated)."""
        if self._open_job is not None:
            self._open_job.cancel()

    def _on_model_opened(self, path: str, trust: bool, res: tuple[Any, list[Any]],
                         then: Callable[[], None] | None) -> None:
        handle, rows = res
        self.opening = False
        self.clear_message.emit()
        self._then[id(handle)] = then
        self.remember(path)
        self.session.set_model(handle, path, trust, rows)  # the window shows it, then calls model_shown

    def model_shown(self, handle: Any) -> None:
        """The views show ``handle`` now: follow-ups (data to open with it) and ``model_opened``."""
        then = self._then.pop(id(handle), None)
        if handle is not self.session.handle:  # another model was opened meanwhile
            return
        self.status.emit(f"Opened {handle.name}", 5000)
        if then is not None:
            then()
        elif not self.session.data_path and self.prefs.default_data:
            self._open_default_data()
        self.model_opened.emit(handle)

    def _open_default_data(self) -> None:
        """Preferences → default evaluation data, for a model opened without any."""
        path = self.prefs.default_data
        if not Path(path).exists():
            self.message.emit(UserMessage("the default evaluation data is missing", "fix it in Preferences",
                                          subject=path, level="warning"))
            return
        self.open_data(path)

    def _on_model_open_failed(self, path: str, exc: BaseException, tb: str) -> None:
        from slimline.core.errors import UntrustedFileError

        self.opening = False
        self.status.emit("", 0)
        if isinstance(exc, UntrustedFileError):
            self.trust_needed.emit(path, exc)
            return
        self.model_open_failed.emit(self.show_exception(exc, tb))

    def trust_declined(self, path: str, exc: Any) -> None:
        msg = UserMessage(str(exc.message), "not opened: the file was not trusted", subject=Path(path).name,
                          level="warning")
        self.message.emit(msg)
        self.model_open_failed.emit(msg)

    # --- data and pipelines --------------------------------------------------------------
    def open_data(self, path: str) -> None:
        self.status.emit(f"Loading {Path(path).name}…", 0)
        evaluation = self.session.doc.pipeline.evaluation.model_copy(deep=True)
        self._data_cut = _window_settings(evaluation)
        run_in_thread(_load_data, path, self.session.handle, evaluation,
                      on_done=lambda ds: self._on_data_loaded(path, ds),
                      on_error=self._on_data_failed)

    def _on_doc_changed(self) -> None:
        """A language model's text is cut into windows by the pipeline's LM settings: re-cut it when they change.

        Otherwise the window would name "24 windows" while the run scores 8 (debounced: typing "128"
        is one reload).
        """
        s = self.session
        if s.data_path and hasattr(s.dataset, "scored_tokens") \
                and _window_settings(s.doc.pipeline.evaluation) != self._data_cut:
            self._recut.start()

    def _on_recut_timeout(self) -> None:
        s = self.session
        if s.data_path and hasattr(s.dataset, "scored_tokens") \
                and _window_settings(s.doc.pipeline.evaluation) != self._data_cut:
            self.open_data(s.data_path)

    def _on_data_failed(self, exc: BaseException, tb: str) -> None:
        self.status.emit("", 0)
        self.show_exception(exc, tb)

    def _on_data_loaded(self, path: str, ds: Any) -> None:
        self.clear_message.emit()
        self.session.set_data(path, ds)
        self.status.emit(f"Evaluation data: {self.session.data_info}", 5000)
        self.remember(path)
        self.data_loaded.emit(path)

    def confirm_discard(self) -> bool:
        if not self.session.doc.modified:
            return True
        answer = self.ask_unsaved()
        if answer == "save":
            return self.save_pipeline(self.session.doc.path or self.ask_save_path())
        return answer == "discard"

    def open_pipeline(self, path: str) -> None:
        doc = self.session.doc
        if not self.confirm_discard():
            return
        try:
            doc.load(path)
        except Exception as exc:  # PipelineError names the step and field
            self.show_exception(exc)
            return
        self.clear_message.emit()
        self.remember(path)
        data = doc.pipeline.evaluation.data
        if data and Path(data).exists():
            self.session.set_pipeline_data(data)
        self.session.pipeline_changed.emit()
        self.pipeline_loaded.emit(path)

    def new_pipeline(self) -> None:
        if self.confirm_discard():
            self.session.doc.new()
            self.session.pipeline_changed.emit()

    def save_pipeline(self, path: str = "") -> bool:
        """Save to ``path`` (default: the document's own); False when there is none or it failed."""
        path = path or self.session.doc.path
        if not path:
            return False
        try:
            self.session.doc.save(path)
        except Exception as exc:
            self.show_exception(exc)
            return False
        self.remember(path)
        self.status.emit(f"Saved {path}", 4000)
        return True

    def open_demo(self) -> None:
        """The demo model, its evaluation data and the demo pipeline, in one click."""
        from slimline.core.demo import demo_paths

        paths = demo_paths()
        doc = self.session.doc
        if paths["pipeline"].exists() and (not doc.modified or self.confirm_discard()):
            try:
                doc.load(str(paths["pipeline"]))
                self.session.pipeline_changed.emit()
            except Exception as exc:
                self.show_exception(exc)

        def after() -> None:
            if paths["eval"].exists():
                self.open_data(str(paths["eval"]))
        self.open_model(str(paths["torch"]), then=after)

    # --- runs ----------------------------------------------------------------------------
    def chain_errors(self) -> list[tuple[str, Any]]:
        """Errors of the format chain against the open model (the same check `slimline run` makes)."""
        from slimline.core.pipeline import check_chain

        try:
            found = check_chain(self.session.doc.pipeline, self.session.handle)
        except Exception:  # a broken plugin check: the run reports it with the step named
            return []
        return [(sid, p) for sid, p in found if p.severity == "error"]

    def run_spec_pipeline(self) -> Any:
        """The pipeline as it will run: a copy, with the preferred device when the user chose one."""
        pipe = self.session.doc.pipeline.model_copy(deep=True)
        if self.prefs.device:
            pipe.evaluation.device = self.prefs.device
        return pipe

    def run_pipeline(self) -> None:
        s = self.session
        if self.runner.running:
            return
        if s.handle is None:
            self.message.emit(UserMessage("no model open", "open a model (or the demo) first", level="info"))
            return
        if not s.doc.pipeline.enabled_steps():
            self.message.emit(UserMessage("the pipeline has no enabled steps",
                                          "add steps from the palette in the Pipeline tab", level="info"))
            return
        errors = self.chain_errors()
        if errors:
            sid, p = errors[0]
            self.message.emit(UserMessage(str(p), p.fix or "fix the step in the Pipeline tab", subject=f"step {sid}"))
            self.show_step.emit(sid)
            return
        self.clear_message.emit()
        data = s.effective_data(self.prefs.default_data)
        ws = self.prefs.workspace_path()
        device = self.prefs.device or f"{s.doc.pipeline.evaluation.device} (pipeline)"
        used = Path(data).name if data else "none (random inputs: latency only)"
        threads = self.prefs.threads or "all"
        self.run_starting.emit(f"Model {s.handle.name}; evaluation data: {used}; threads: {threads}; "
                               f"device: {device}; workspace: {ws}")
        s.run_original = None
        self._run_model = s.model_path
        self.runner.start(self.run_spec_pipeline(), s.model_path, data_path=data, workspace=str(ws), trust=s.trusted,
                          threads=self.prefs.threads, dims=s.dims or None, use_cache=self.use_cache)

    def cancel_run(self) -> None:
        if self.runner.running:
            self.runner.cancel()

    def _on_run_started(self, run_id: str) -> None:
        self.session.note_run_started(run_id)
        self.schedule_autosave()

    def _on_step_started(self, ev: StepStartedEvent) -> None:
        sid = ev.step_id
        if sid != "original" and self._run_model == self.session.model_path:
            self.step_status.emit(sid, "running…", [])

    def _on_step_result(self, res: StepResult) -> None:
        sid = res.step_id
        if self._run_model != self.session.model_path:  # another model was opened meanwhile
            return
        if sid == "original":
            self.session.run_original = res
        else:
            self.step_result.emit(sid, res, self.session.run_original)

    def _on_run_finished(self, status: str, ev: FinalEvent) -> None:
        self.run_ended.emit(status, ev)
        if isinstance(ev, FailedEvent):
            self.message.emit(UserMessage(ev.message or "run failed", ev.hint,
                                          subject=f"step {ev.step_id}" if ev.step_id else "",
                                          details=ev.details or ""))
            if ev.step_id and self.session.doc.step(ev.step_id) is not None:
                self.step_status.emit(ev.step_id, "failed", ["failed"])
        self._add_run_record(self.session.current_run_id)
        self.run_finished.emit(status)

    def _add_run_record(self, run_id: str) -> None:
        if not run_id:
            return
        from slimline.core.history import load_run, run_dir

        try:
            record = load_run(run_dir(self.prefs.workspace_path(), run_id))
        except (OSError, ValueError):
            return
        self.session.add_run(record)
        self.run_recorded.emit(record)

    def add_recorded_run(self, run_id: str) -> None:
        """A run another job wrote into the workspace (a sweep's variant): into Results and the Pareto chart.

        Read on a worker thread; unlike a run of the window it is not selected (a sweep ends many)."""
        from slimline.core.history import load_run, run_dir

        if run_id:
            run_in_thread(load_run, run_dir(self.prefs.workspace_path(), run_id), on_done=self.session.add_run,
                          on_error=lambda _e, _tb: None)

    def load_history(self) -> None:
        """Every run of the workspace is a variant too, also those made with `slimline run`."""
        ws = self.prefs.workspace_path()
        if self._history_loading:
            return
        self._history_loading, self._history_at = True, time.monotonic()

        def done(runs: list[RunRecord]) -> None:
            self._history_loading = False
            if self.prefs.workspace_path() == ws:
                self.session.set_runs(runs)

        def failed(e: BaseException, _tb: str) -> None:
            self._history_loading = False
            self.status.emit(f"Could not read run history: {e}", 8000)
        run_in_thread(load_history, ws, on_done=done, on_error=failed)

    def refresh_runs(self, force: bool = True) -> None:
        """Re-read the workspace's runs (on focus: at most every REFRESH_MIN_S; never mid-run)."""
        if not force and (self.runner.running or time.monotonic() - self._history_at < REFRESH_MIN_S):
            return
        self.load_history()

    # --- report --------------------------------------------------------------------------
    def report_run_id(self) -> str:
        """The run of the selected variant, else the latest run."""
        if self.session.selected is not None:
            return self.session.selected.run_id
        return max(self.session.runs, default="")

    def save_report(self, path: str, run_id: str = "") -> None:
        """Write the HTML report through the engine's job runner (layer statistics load the models)."""
        from slimline.core.export.task import start_export

        run_id = run_id or self.report_run_id()
        rd = self.prefs.workspace_path() / "runs" / run_id
        if not (rd / "run.json").is_file():
            self.message.emit(UserMessage("the run record is missing", "pick another run", subject=str(rd)))
            return
        job = start_export({"kind": "report", "run_dir": str(rd), "out": path})
        self.status.emit(f"Writing the report of run {run_id}…", 0)
        timer = QTimer(self)
        timer.setInterval(100)

        def poll() -> None:
            for ev in job.poll():
                if isinstance(ev, ProgressEvent):
                    self.status.emit(f"Report: {ev.message}…", 0)
                elif isinstance(ev, (DoneEvent, FailedEvent, CancelledEvent)):
                    timer.stop()
                    timer.deleteLater()
                    if isinstance(ev, DoneEvent):
                        saved = str((ev.result or {}).get("path", path))
                        self.status.emit(f"Report saved to {saved}", 8000)
                        self.report_saved.emit(saved)
                    elif isinstance(ev, FailedEvent):
                        self.status.emit("", 0)
                        self.message.emit(UserMessage(ev.message or "the report failed", ev.hint, subject=path,
                                                      details=ev.details or ""))
                    else:
                        self.status.emit("", 0)
                        self.message.emit(UserMessage("the report was cancelled", "", subject=path,
                                                      level="warning"))
        timer.timeout.connect(poll)
        timer.start()
        self._report_job = (job, timer)

    def schedule_autosave(self, *_: Any) -> None:
        self.keeper.schedule()
