"""What outlives the window: autosave of the open session, restore after an unclean end, clean shutdown.

Every change restarts a short timer and the state (paths, the pipeline with its
unsaved edits, the session's runs) is written on a worker thread, so a crash or
a kill loses at most a second of work; the next start offers to restore it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QTimer

from slimline.gui.messages import UserMessage
from slimline.gui.workers import run_in_thread

if TYPE_CHECKING:
    from slimline.core.results import RunRecord
    from slimline.gui.session_controller import SessionController

AUTOSAVE_DEBOUNCE_MS = 1000


class SessionKeeper(QObject):
    """Autosave and restore for one ``SessionController`` (its signals report what happened)."""

    def __init__(self, ctl: SessionController) -> None:
        super().__init__(ctl)
        self.ctl = ctl
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(AUTOSAVE_DEBOUNCE_MS)
        self.timer.timeout.connect(self._save_now)

    def workspace_state(self) -> Any:
        """What is open now, as slimline.core.autosave.WorkspaceState (cheap: no file access)."""
        from slimline.core.autosave import WorkspaceState

        s = self.ctl.session
        running = s.current_run_id if self.ctl.runner.running else ""
        return WorkspaceState(model_path=s.model_path, trusted=s.trusted,
                              pipeline=s.doc.pipeline.model_dump(mode="json"), pipeline_path=s.doc.path,
                              pipeline_modified=s.doc.modified, data_path=s.data_path, dims=dict(s.dims),
                              run_ids=list(s.session_run_ids), running_run_id=running)

    def schedule(self, *_: Any) -> None:
        """Every change restarts a 1 s timer; the write happens on a worker thread."""
        from shiboken6 import isValid

        if isValid(self.timer):  # cleanChanged also fires while the window is torn down
            self.timer.start()

    def _save_now(self) -> None:
        from slimline.core import autosave

        run_in_thread(autosave.save_state, self.ctl.prefs.workspace_path(), self.workspace_state(),
                      on_done=lambda path: self.ctl.autosaved.emit(str(path)),
                      on_error=lambda e, tb: self.ctl.status.emit(f"Autosave failed: {e}", 8000))

    def check_restore(self) -> None:
        from slimline.core import autosave

        run_in_thread(autosave.pending_restore, self.ctl.prefs.workspace_path(),
                      on_done=lambda r: self.ctl.restore_offered.emit(r) if r is not None else None,
                      on_error=lambda e, tb: None)

    def discard_restore(self) -> None:
        from slimline.core import autosave

        autosave.discard(self.ctl.prefs.workspace_path())

    def restore_session(self, restore: Any) -> None:
        """Reopen what the last session had open; each part that fails says so and the rest goes on."""
        from slimline.core import autosave
        from slimline.core.pipeline import parse_pipeline

        state, s = restore.state, self.ctl.session
        s.session_run_ids = list(state.run_ids)
        if state.pipeline:
            try:
                s.doc.restore(parse_pipeline(state.pipeline), state.pipeline_path, state.pipeline_modified)
                s.pipeline_changed.emit()
            except Exception as exc:
                self.ctl.show_exception(exc)
        run_in_thread(autosave.restore_runs, self.ctl.prefs.workspace_path(), state,
                      on_done=lambda records: self._add_runs(records),
                      on_error=lambda e, tb: None)
        data = state.data_path if state.data_path and Path(state.data_path).exists() else ""

        def after_model() -> None:
            if data:
                self.ctl.open_data(data)
            self.ctl.session_restored.emit()
        if state.model_path and Path(state.model_path).exists():
            self.ctl.open_model(state.model_path, then=after_model)  # asks again before trusting a pickle
            return
        if state.model_path:
            self.ctl.message.emit(UserMessage("the model of the last session is gone", "open it again",
                                          subject=state.model_path, level="warning"))
        if data:
            self.ctl.open_data(data)
        self.ctl.session_restored.emit()

    def _add_runs(self, records: list[RunRecord]) -> None:
        for record in records:
            self.ctl.session.add_run(record)

    def shutdown(self) -> None:
        """A normal exit: cancel a run, and record it so the next start offers no restore."""
        if self.ctl.runner.running:
            self.ctl.runner.cancel()
        self.timer.stop()
        try:  # a small file; fine to block at exit
            from slimline.core import autosave

            autosave.mark_clean_shutdown(self.ctl.prefs.workspace_path(), self.workspace_state())
        except Exception as exc:  # never keep the window from closing
            print(f"slimline: could not record the clean shutdown: {exc}", file=__import__("sys").stderr)
