"""Drives the Sensitivity panel: runs the analysis and the budgeted search as engine jobs, and writes the
step's exclusion list into the pipeline as undoable edits.

The panel lists the pipeline's steps that can be applied layer by layer, plus the step kinds the pipeline
does not have yet ("not in the pipeline": excluding a layer there adds the step, undoably). Exclusions go
through ``PipelineDocument.set_params`` (a QUndoStack command, one undo step per exclusion), so Edit →
Undo, the Pipeline tab's form and a saved pipeline file all see the same edit.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from slimline.gui.messages import UserMessage
from slimline.gui.sensitivity_view import SensitivityView
from slimline.gui.task_runner import TaskRunner

KINDS = ("builtin.quantize_static", "builtin.quantize_dynamic", "builtin.prune_magnitude",
         "builtin.prune_structured", "builtin.lowrank")


class SensitivityController(QObject):
    """Signals: ``result_ready(SensitivityResult)``, ``search_finished(SearchResult)``, ``message(UserMessage)``."""

    result_ready = Signal(object)
    search_finished = Signal(object)
    message = Signal(object)

    def __init__(self, session: Any, prefs: Callable[[], Any], view: SensitivityView,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session, self.prefs, self.view = session, prefs, view
        self.runner = TaskRunner(self)
        self.kind = ""          # "sensitivity" | "search" while running
        self.result: Any = None
        self.result_key = ""
        self._pending_key = ""
        r, v = self.runner, view
        r.progress.connect(v.set_progress)
        r.running_changed.connect(v.set_running)
        r.done.connect(self._on_runner_done)
        r.failed.connect(self._on_runner_failed)
        r.cancelled.connect(lambda: v.status.setText("Cancelled."))
        v.analyze_clicked.connect(self.analyze)
        v.search_clicked.connect(self.search)
        v.cancel_clicked.connect(self.runner.cancel)
        v.exclude_clicked.connect(self.exclude)
        v.undo_clicked.connect(lambda: self.session.doc.undo_stack.undo())
        session.doc.changed.connect(self.refresh)
        session.pipeline_changed.connect(self.refresh)
        session.model_changed.connect(self._on_session_model_changed)
        self.refresh()

    # --- steps ---------------------------------------------------------------------------
    @staticmethod
    def _plugin(plugin_id: str) -> Any:
        from slimline.core.registry import discover

        entry = discover().get(plugin_id)
        return entry.plugin if entry is not None and entry.plugin is not None else None

    def entries(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        in_pipe: set[str] = set()
        for s in self.session.doc.steps:
            cls = self._plugin(s.plugin)
            if cls is not None and hasattr(cls, "layerwise"):
                out.append((s.id, f"{s.id} · {cls.title}"))
                in_pipe.add(s.plugin)
        for pid in KINDS:
            cls = self._plugin(pid)
            if cls is not None and pid not in in_pipe:
                out.append(("+" + pid, f"{cls.title} (not in the pipeline)"))
        return out

    def _resolve(self, key: str) -> tuple[Any, dict[str, Any], str]:
        """(plugin class, params, step id or '') of a panel entry."""
        if key.startswith("+"):
            cls = self._plugin(key[1:])
            return cls, cls.Params().model_dump(mode="json"), ""
        step = self.session.doc.step(key)
        if step is None:
            raise LookupError(f"no step {key} in the pipeline")
        return self._plugin(step.plugin), dict(step.params), step.id

    def excluded(self, key: str) -> set[str]:
        from slimline.core.sensitivity.protocol import exclusion_field

        try:
            cls, params, _ = self._resolve(key)
        except LookupError:
            return set()
        return set(params.get(exclusion_field(cls)) or []) if cls is not None else set()

    def refresh(self) -> None:
        self.view.set_steps(self.entries())
        if self.result is not None:
            self.view.set_excluded(self.excluded(self.result_key))

    def _on_session_model_changed(self, _handle: Any) -> None:
        self.result, self.result_key = None, ""
        self.view.set_result(None)
        self.refresh()

    # --- jobs ----------------------------------------------------------------------------
    def _spec(self, key: str) -> tuple[dict[str, Any], Any, dict[str, Any]]:
        s, prefs = self.session, self.prefs()
        cls, params, _ = self._resolve(key)
        spec = {"model_path": s.model_path, "trust": s.trusted, "dims": dict(s.dims or {}),
                "data_path": s.effective_data(prefs.default_data),
                "train_path": s.doc.pipeline.evaluation.train_data,
                "evaluation": s.doc.pipeline.evaluation.model_dump(mode="json"),
                "workspace": str(prefs.workspace_path())}
        return spec, cls, params

    def _start(self, kind: str, key: str, target: str, spec: dict[str, Any]) -> None:
        from slimline.core.sensitivity import job

        if self.session.handle is None:
            self.message.emit(UserMessage("no model open", "open a model (or the demo) first", level="info"))
            return
        self.kind, self._pending_key = kind, key
        if self.runner.start(lambda: job.start(target, spec)):
            self.view.set_progress(0.0, f"starting the {kind}…")

    def analyze(self, key: str) -> None:
        from slimline.core.sensitivity import job
        from slimline.core.sensitivity.models import SensitivitySettings
        from slimline.core.sensitivity.prepare import default_modes

        spec, cls, params = self._spec(key)
        settings = SensitivitySettings(step=cls.id, params=params, modes=default_modes(cls.id),
                                       threads=self.prefs().threads)
        spec.update(settings=settings.model_dump(mode="json"))
        self._start("sensitivity", key, job.SENSITIVITY_TASK, spec)

    def search(self, key: str) -> None:
        from slimline.core.search.models import SearchSettings
        from slimline.core.sensitivity import job

        spec, cls, params = self._spec(key)
        spec.update(settings=SearchSettings(step=cls.id, params=params, threads=self.prefs().threads
                                            ).model_dump(mode="json"))
        self._start("search", key, job.SEARCH_TASK, spec)

    def _on_runner_done(self, doc: dict[str, Any]) -> None:
        if self.kind == "search":
            from slimline.core.search.models import SearchResult

            found = SearchResult.model_validate(doc)
            self.view.status.setText(found.verdict)
            self.message.emit(UserMessage(found.verdict, "every candidate is a variant in the Results tab",
                                          subject="budgeted search", level="info" if found.reachable else "warning"))
            if found.sensitivity is not None:
                self._show(found.sensitivity, self._pending_key)
            self.search_finished.emit(found)
            return
        from slimline.core.sensitivity.models import SensitivityResult

        self._show(SensitivityResult.model_validate(doc), self._pending_key)

    def _show(self, result: Any, key: str) -> None:
        self.result, self.result_key = result, key
        self.view.remember_result_step(key)
        self.view.set_result(result, self.excluded(key))
        doc = self.session.doc
        before = [s.id for s in doc.steps[: max(doc.index_of(key), 0)] if s.enabled]
        if before:   # the step's real input is what those steps make; the ranking is on the open model
            self.view.status.setText(self.view.status.text() + f" Ranked on the open model, not on what "
                                     f"{', '.join(before)} make of it.")
        self.result_ready.emit(result)

    def _on_runner_failed(self, msg: UserMessage) -> None:
        self.view.status.setText(f"Failed: {msg.message}")
        self.message.emit(msg)

    # --- exclusions ----------------------------------------------------------------------
    def exclude(self, key: str, layers: list[str]) -> None:
        """Add ``layers`` to the step's exclusion list: one undoable pipeline edit."""
        from slimline.core.sensitivity.protocol import exclusion_field, with_excluded

        try:
            cls, params, sid = self._resolve(key)
            new = with_excluded(cls, params, layers)
        except Exception as exc:  # an old step id, or a step without an exclusion list
            self.message.emit(UserMessage(str(getattr(exc, "message", exc)), "pick another step", subject=key))
            return
        doc = self.session.doc
        if not sid:   # a step kind the pipeline does not have yet: add it, with the exclusion
            sid = doc.add_step(cls.id, params=new)
            if self.result_key == key:
                self.result_key = sid
                self.view.remember_result_step(sid)
        else:
            doc.set_params(sid, new)
        self.refresh()
        self.view.select_step(sid)
        names = ", ".join(f"'{n}'" for n in layers)
        self.view.status.setText(f"Layer {names} excluded from step {sid} ({cls.title}, "
                                 f"{exclusion_field(cls)}); Undo reverts it.")


def attach(win: Any) -> SensitivityController:
    """Wire the Inspect tab's Sensitivity panel to the window's session (called once by MainWindow)."""
    ctl = SensitivityController(win.session, lambda: win.ctl.prefs, win.inspector.sensitivity, win)
    ctl.result_ready.connect(win.inspector.show_sensitivity)
    ctl.message.connect(win.show_message)
    ctl.search_finished.connect(lambda _r: win.ctl.load_history())
    return ctl
