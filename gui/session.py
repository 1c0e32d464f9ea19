"""The session: what is open now (model, evaluation data, pipeline) and the runs the window knows.

One object owns this state so views never read it back from widgets, and so
switching model drops what belonged to the previous one. It holds no widgets;
views subscribe to its signals. The ``SessionController`` is the only writer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from slimline.core.export.variants import Variant, variants_of
from slimline.core.results import RunRecord, StepResult
from slimline.gui.pipeline_doc import PipelineDocument
from slimline.gui.results import model_key, run_model


def default_dims(handle: Any) -> dict[str, int]:
    """The dynamic dimensions of ``handle`` with their default values (what the summary's spins show)."""
    names: list[str] = []
    for s in list(handle.inputs) + list(handle.outputs):
        for d in s.shape:
            if isinstance(d, str) and d not in names:
                names.append(d)
    names += [n for n in handle.dim_defaults if n not in names]
    return {n: int(handle.dim_defaults.get(n, 1)) for n in names}


def input_signature(handle: Any) -> list[tuple[str, str, tuple[str, ...]]]:
    """What a dataset must match: input names, dtypes and shapes (dynamic dims by name)."""
    if handle is None:
        return []
    return [(s.name, str(s.dtype), tuple(str(d) for d in s.shape)) for s in handle.inputs]


def _run_fingerprint(runs: dict[str, RunRecord]) -> dict[str, tuple[str, int]]:
    return {rid: (r.status, len(r.results)) for rid, r in runs.items()}


class SessionModel(QObject):
    """Signals fire after the state changed; ``model_changed`` carries the new handle (or None)."""

    model_changed = Signal(object)
    data_changed = Signal()
    pipeline_changed = Signal()    # another pipeline (new, opened, restored); edits are doc.changed
    runs_changed = Signal()
    selection_changed = Signal(object)  # Variant | None

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.handle: Any = None
        self.model_path = ""
        self.trusted = False
        self.rows: list[Any] = []
        self.dims: dict[str, int] = {}
        self.data_path = ""
        self.dataset: Any = None
        self.data_info = ""
        self.doc = PipelineDocument(self)
        self.runs: dict[str, RunRecord] = {}
        self.session_run_ids: list[str] = []   # runs started (or restored) in this session: autosave
        self.current_run_id = ""
        self.run_original: StepResult | None = None  # the original's StepResult in the current run
        self.selected: Variant | None = None

    # --- model ---------------------------------------------------------------------------
    @property
    def model_key(self) -> str:
        return model_key(self.model_path)

    def set_model(self, handle: Any, path: str, trusted: bool, rows: list[Any]) -> None:
        """A new model; evaluation data made for other inputs is dropped (it could not be run against it)."""
        inputs_differ = self.handle is not None and input_signature(self.handle) != input_signature(handle)
        self.handle, self.model_path, self.trusted, self.rows = handle, path, trusted, list(rows)
        self.dims = default_dims(handle)
        self.run_original = None
        if inputs_differ and (self.data_path or self.data_info):
            self.clear_data()
        self.model_changed.emit(handle)

    def set_dims(self, dims: dict[str, int]) -> None:
        self.dims = dict(dims)
        if self.handle is not None:
            self.handle = self.handle.with_dims(**dims)

    # --- data ----------------------------------------------------------------------------
    def set_data(self, path: str, dataset: Any) -> None:
        self.data_path, self.dataset = path, dataset
        if hasattr(dataset, "scored_tokens"):  # a language model's text as token windows (slimline.core.lm.text)
            self.data_info = f"{dataset.describe()} (language model text)"
            self.data_changed.emit()
            return
        n = len(dataset) if hasattr(dataset, "__len__") else "?"
        kind = getattr(dataset, "kind", "real")
        labels = "labelled" if getattr(dataset, "labels", None) is not None else "no labels (fidelity only)"
        self.data_info = (f"{getattr(dataset, 'name', Path(path).name)} "
                          f"(n={n}, {labels}{', random' if kind == 'random' else ''})")
        self.data_changed.emit()

    def set_pipeline_data(self, path: str) -> None:
        """The pipeline names its own evaluation data: say so while no data was opened explicitly."""
        if not self.data_path:
            self.data_info = f"{Path(path).name} (from pipeline)"
            self.data_changed.emit()

    def clear_data(self) -> None:
        self.data_path, self.dataset, self.data_info = "", None, ""
        self.data_changed.emit()

    def effective_data(self, default_data: str = "") -> str | None:
        return self.data_path or self.doc.pipeline.evaluation.data or default_data or None

    # --- runs ----------------------------------------------------------------------------
    def set_runs(self, runs: list[RunRecord]) -> None:
        """All runs of the workspace; no signal when nothing changed (focus refreshes are frequent)."""
        new = {r.run_id: r for r in runs}
        for rid, old in self.runs.items():  # restored runs a crash cut short are "interrupted" in memory only
            if old.status == "interrupted" and rid in new and new[rid].status == "running":
                new[rid] = old
        if _run_fingerprint(new) == _run_fingerprint(self.runs):
            return
        self.runs = new
        self.runs_changed.emit()

    def add_run(self, run: RunRecord) -> None:
        self.runs[run.run_id] = run
        self.runs_changed.emit()

    def note_run_started(self, run_id: str) -> None:
        self.current_run_id = run_id
        self.run_original = None
        if run_id and run_id not in self.session_run_ids:
            self.session_run_ids.append(run_id)

    def variants(self, model: str = "") -> list[Variant]:
        """The variants of every known run (of ``model`` only, a model_key(), when given)."""
        return [v for r in self.runs.values() if not model or run_model(r)[0] == model for v in variants_of(r)]

    def select(self, variant: Variant | None) -> None:
        self.selected = variant
        self.selection_changed.emit(variant)
