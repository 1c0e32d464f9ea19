"""The pipeline being edited, with every edit an undoable command.

Commands store the step list before and after (snapshots of small pydantic
objects), which makes undo exact for every kind of edit — add, remove, move,
enable, duplicate, parameter changes, one-click fixes — with one code path.
Consecutive edits of the same field merge into one undo step, so typing "0.25"
is one undo, not four.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from slimline.core.pipeline import Pipeline, StepSpec, load_pipeline, save_pipeline

CONVERT_ONNX = "builtin.convert_onnx"
_MERGE_PARAMS = 4711
_MERGE_EVALUATION = 4712


def default_params(plugin_id: str) -> dict[str, Any]:
    """A new step starts with the plugin's defaults written out, so the file says what runs."""
    from slimline.core.registry import discover

    entry = discover().get(plugin_id)
    if entry is None or entry.plugin is None:
        return {}
    return entry.plugin.Params().model_dump(mode="json")


def plugin_title(plugin_id: str) -> str:
    from slimline.core.registry import discover

    entry = discover().get(plugin_id)
    if entry is not None and entry.plugin is not None:
        return entry.plugin.title
    return plugin_id


def trains(steps: list[StepSpec]) -> bool:
    """Whether an enabled step trains (a distillation step: its loss curve is drawn live)."""
    from slimline.core.registry import discover

    found = discover()
    return any(s.enabled and (e := found.get(s.plugin)) is not None and e.plugin is not None
               and e.plugin.category == "distill" for s in steps)


def _copy_steps(steps: list[StepSpec]) -> list[StepSpec]:
    return [s.model_copy(deep=True) for s in steps]


class StepsCommand(QUndoCommand):
    """Replace the step list; undo puts the old one back."""

    def __init__(self, doc: PipelineDocument, text: str, after: list[StepSpec],
                 merge_key: tuple[str, str] | None = None) -> None:
        super().__init__(text)
        self.doc = doc
        self.before = _copy_steps(doc.pipeline.steps)
        self.after = _copy_steps(after)
        self.merge_key = merge_key

    def id(self) -> int:  # noqa: A003 - Qt API
        return _MERGE_PARAMS if self.merge_key else -1

    def mergeWith(self, other: QUndoCommand) -> bool:  # noqa: N802
        if isinstance(other, StepsCommand) and other.merge_key and other.merge_key == self.merge_key:
            self.after = _copy_steps(other.after)
            return True
        return False

    def redo(self) -> None:
        self.doc._set_steps(self.after)

    def undo(self) -> None:
        self.doc._set_steps(self.before)


class EvaluationCommand(QUndoCommand):
    """Change evaluation settings (task override, row cap, LM settings); undo puts the old values back.

    Values are copied in and out: the document never shares a settings object with the undo stack.
    Consecutive edits of the same field (typing "128" in a spin box) merge into one undo step.
    """

    def __init__(self, doc: PipelineDocument, text: str, changes: dict[str, Any],
                 merge_key: str = "") -> None:
        super().__init__(text)
        self.doc = doc
        self.before = {k: _copy_value(getattr(doc.pipeline.evaluation, k)) for k in changes}
        self.after = {k: _copy_value(v) for k, v in changes.items()}
        self.merge_key = merge_key

    def id(self) -> int:  # noqa: A003 - Qt API
        return _MERGE_EVALUATION if self.merge_key else -1

    def mergeWith(self, other: QUndoCommand) -> bool:  # noqa: N802
        if isinstance(other, EvaluationCommand) and other.merge_key and other.merge_key == self.merge_key:
            self.after = {k: _copy_value(v) for k, v in other.after.items()}
            return True
        return False

    def redo(self) -> None:
        self.doc._set_evaluation(self.after)

    def undo(self) -> None:
        self.doc._set_evaluation(self.before)


def _copy_value(v: Any) -> Any:
    return v.model_copy(deep=True) if isinstance(v, BaseModel) else v


class PipelineDocument(QObject):
    """Holds the Pipeline and its undo stack; views listen to ``changed``."""

    changed = Signal()
    path_changed = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pipeline = Pipeline()
        self.path: str = ""
        self.undo_stack = QUndoStack(self)

    # --- state -------------------------------------------------------------------------
    @property
    def steps(self) -> list[StepSpec]:
        return self.pipeline.steps

    @property
    def modified(self) -> bool:
        return not self.undo_stack.isClean()

    def step(self, step_id: str) -> StepSpec | None:
        return next((s for s in self.pipeline.steps if s.id == step_id), None)

    def index_of(self, step_id: str) -> int:
        return next((i for i, s in enumerate(self.pipeline.steps) if s.id == step_id), -1)

    def _set_steps(self, steps: list[StepSpec]) -> None:
        self.pipeline.steps = _copy_steps(steps)
        self.changed.emit()

    def _set_evaluation(self, values: dict[str, Any]) -> None:
        for k, v in values.items():
            setattr(self.pipeline.evaluation, k, _copy_value(v))
        self.changed.emit()

    def set_evaluation(self, merge_key: str = "", **changes: Any) -> None:
        """Undoable change of ``pipeline.evaluation`` fields (validated by the pipeline model).

        Edits with the same non-empty ``merge_key`` in a row are one undo step.
        """
        ev = self.pipeline.evaluation
        changes = {k: v for k, v in changes.items() if getattr(ev, k) != v}
        if not changes:
            return
        # refuse what the file could not hold
        ev.model_validate({**ev.model_dump(), **{k: _copy_value(v) for k, v in changes.items()}})
        self.undo_stack.push(EvaluationCommand(self, "Change evaluation settings", changes, merge_key))

    def _push(self, text: str, steps: list[StepSpec], merge_key: tuple[str, str] | None = None) -> None:
        self.undo_stack.push(StepsCommand(self, text, steps, merge_key))

    # --- edits (all undoable) ----------------------------------------------------------
    def add_step(self, plugin_id: str, index: int | None = None, params: dict[str, Any] | None = None) -> str:
        steps = _copy_steps(self.pipeline.steps)
        sid = self.pipeline.new_step_id()
        from slimline.core.registry import discover

        entry = discover().get(plugin_id)
        version = entry.plugin.version if entry is not None and entry.plugin is not None else "1"
        step = StepSpec(id=sid, plugin=plugin_id, plugin_version=str(version),
                        params=dict(params) if params is not None else default_params(plugin_id))
        steps.insert(len(steps) if index is None else max(0, min(index, len(steps))), step)
        self._push(f"Add {plugin_title(plugin_id)}", steps)
        return sid

    def remove_step(self, step_id: str) -> None:
        steps = [s for s in _copy_steps(self.pipeline.steps) if s.id != step_id]
        self._push(f"Remove {step_id}", steps)

    def move_step(self, step_id: str, to_index: int) -> None:
        """Move so the step ends up at ``to_index`` (position among the other steps)."""
        steps = _copy_steps(self.pipeline.steps)
        i = self.index_of(step_id)
        if i < 0:
            return
        step = steps.pop(i)
        to_index = max(0, min(to_index, len(steps)))
        if to_index == i:
            return
        steps.insert(to_index, step)
        self._push(f"Move {step_id}", steps)

    def set_enabled(self, step_id: str, enabled: bool) -> None:
        steps = _copy_steps(self.pipeline.steps)
        for s in steps:
            if s.id == step_id and s.enabled != enabled:
                s.enabled = enabled
                self._push(f"{'Enable' if enabled else 'Disable'} {step_id}", steps)
                return

    def duplicate_step(self, step_id: str) -> str:
        i = self.index_of(step_id)
        if i < 0:
            return ""
        src = self.pipeline.steps[i]
        steps = _copy_steps(self.pipeline.steps)
        new = src.model_copy(deep=True, update={"id": self.pipeline.new_step_id()})
        steps.insert(i + 1, new)
        self._push(f"Duplicate {step_id}", steps)
        return new.id

    def set_params(self, step_id: str, params: dict[str, Any], field: str = "") -> None:
        steps = _copy_steps(self.pipeline.steps)
        for s in steps:
            if s.id == step_id:
                if s.params == params:
                    return
                s.params = dict(params)
                self._push(f"Edit {step_id}{'.' + field if field else ''}", steps,
                           merge_key=(step_id, field) if field else None)
                return

    def insert_conversion_before(self, step_id: str) -> str:
        """The one-click fix for a torch→ONNX mismatch."""
        i = self.index_of(step_id)
        return self.add_step(CONVERT_ONNX, index=max(i, 0))

    # --- files -------------------------------------------------------------------------
    def new(self) -> None:
        self.pipeline = Pipeline()
        self.path = ""
        self.undo_stack.clear()
        self.changed.emit()
        self.path_changed.emit("")

    def load(self, path: str) -> None:
        """Raises PipelineError with the step and field named; on error nothing changes."""
        pipe = load_pipeline(path)
        self.pipeline = pipe
        self.path = str(path)
        self.undo_stack.clear()
        self.changed.emit()
        self.path_changed.emit(self.path)

    def restore(self, pipeline: Pipeline, path: str = "", modified: bool = False) -> None:
        """Put back a pipeline from an autosave (undo history starts fresh; unsaved stays unsaved)."""
        self.pipeline = pipeline
        self.path = str(path or "")
        self.undo_stack.clear()
        if modified:
            self.undo_stack.resetClean()
        self.changed.emit()
        self.path_changed.emit(self.path)

    def save(self, path: str | None = None) -> str:
        target = str(path or self.path)
        if not target:
            raise ValueError("no file name")
        pipe = self.pipeline.model_copy(deep=True)
        for attr in ("data", "train_data"):  # keep the file portable: data relative to it when beside it
            value = getattr(pipe.evaluation, attr, None)
            if value and Path(value).is_absolute():
                try:
                    setattr(pipe.evaluation, attr, str(Path(value).relative_to(Path(target).resolve().parent)))
                except ValueError:
                    pass
        save_pipeline(pipe, target)
        self.path = target
        self.undo_stack.setClean()
        self.path_changed.emit(target)
        return target
