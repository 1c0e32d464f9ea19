"""Pipeline editor: palette on the left, the lane of steps, the selected step's form.

Everything the user does here becomes a command on the document's undo stack;
the views only redraw from the document when it changes. The format chain is
re-checked on every change against the open model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from slimline.core.results import StepResult
from slimline.gui.palette_view import PaletteView
from slimline.gui.param_form import ParamForm, guard_wheel
from slimline.gui.pipeline_doc import CONVERT_ONNX, PipelineDocument, plugin_title
from slimline.gui.step_lane import StepLane


class PipelineEditor(QWidget):
    """Signals: ``step_selected(step_id)``."""

    step_selected = Signal(str)

    def __init__(self, doc: PipelineDocument | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc = doc or PipelineDocument(self)
        self.model: Any = None
        self.form: ParamForm | None = None
        self.problems: dict[str, list[Any]] = {}
        self.step_status: dict[str, tuple[str, list[str]]] = {}
        self.step_results: dict[str, tuple[StepResult, StepResult | None]] = {}
        self.palette_view = PaletteView()
        self.lane = StepLane()
        self.form_box = QGroupBox("Step parameters")
        self.form_scroll = QScrollArea()
        self.form_scroll.setWidgetResizable(True)
        self.form_info = QLabel("Select a step to edit its parameters.")
        self.form_info.setWordWrap(True)
        box_lay = QVBoxLayout(self.form_box)
        box_lay.addWidget(self.form_info)
        box_lay.addWidget(self.form_scroll, 1)
        self.chain_label = QLabel("")
        self.chain_label.setWordWrap(True)
        self.eval_box = self._build_evaluation_box()
        center = QWidget()
        c_lay = QVBoxLayout(center)
        c_lay.setContentsMargins(0, 0, 0, 0)
        c_lay.addWidget(QLabel("<b>Pipeline</b> — steps run left to right; drag cards to reorder."))
        c_lay.addWidget(self.lane)
        c_lay.addWidget(self.chain_label)
        c_lay.addWidget(self.eval_box)
        c_lay.addWidget(self.form_box, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        pal_box = QGroupBox("Plugins")
        QVBoxLayout(pal_box).addWidget(self.palette_view)
        split.addWidget(pal_box)
        split.addWidget(center)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 4)
        split.setSizes([260, 1100])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split)
        self.palette_view.plugin_activated.connect(self._on_palette_plugin_activated)
        self.lane.add_requested.connect(self._on_lane_add_requested)
        self.lane.move_requested.connect(self.doc.move_step)
        self.lane.enabled_requested.connect(self.doc.set_enabled)
        self.lane.remove_requested.connect(self.doc.remove_step)
        self.lane.duplicate_requested.connect(self._on_lane_duplicate_requested)
        self.lane.fix_requested.connect(self._on_lane_fix_requested)
        self.lane.step_selected.connect(self._on_lane_step_selected)
        self.doc.changed.connect(self._on_doc_changed)
        self._on_doc_changed()

    # --- public ------------------------------------------------------------------------
    def set_model(self, handle: Any) -> None:
        self.model = handle
        self.palette_view.set_model(handle)
        self._on_doc_changed()

    def select_step(self, step_id: str) -> None:
        self.lane.select(step_id)

    def set_step_status(self, step_id: str, text: str, flags: list[str] | None = None) -> None:
        self.step_status[step_id] = (text, list(flags or []))
        self.step_results.pop(step_id, None)
        card = self.lane.cards.get(step_id)
        if card is not None:
            card.set_status(text, flags)

    def set_step_result(self, step_id: str, result: StepResult, original: StepResult | None) -> None:
        """A finished step: its card shows the figures against the original and its flags."""
        self.step_results[step_id] = (result, original)
        self.step_status.pop(step_id, None)
        card = self.lane.cards.get(step_id)
        if card is not None:
            card.set_result(result, original)
            self.lane.updateGeometry()

    def clear_step_status(self) -> None:
        self.step_status = {}
        self.step_results = {}
        for c in self.lane.cards.values():
            c.set_status("", [])

    # --- evaluation settings ------------------------------------------------------------
    def _build_evaluation_box(self) -> QGroupBox:
        """The pipeline's evaluation task override, row cap and, for a language model, its text settings.

        The rest (latency, budgets) lives in the file and Preferences. The language-model form is
        generated from ``LMSettings`` like a step's form, so the fields, bounds and help are the
        pipeline model's own.
        """
        from slimline.core.pipeline import LMSettings
        from slimline.core.tasks import TASKS

        box = QGroupBox("Evaluation")
        self.task_combo = QComboBox()
        self.task_combo.addItem("inferred from the model", None)
        for t in TASKS:
            self.task_combo.addItem(t.replace("_", " "), t)
        self.task_combo.setToolTip("What the model's output is, which decides how fidelity is judged. "
                                   "Leave it inferred unless the run's guess (shown above the charts) is wrong.")
        self.max_rows_spin = QSpinBox()
        self.max_rows_spin.setRange(0, 10_000_000)
        self.max_rows_spin.setSpecialValueText("all rows")
        self.max_rows_spin.setSingleStep(100)
        self.max_rows_spin.setToolTip("Evaluate on at most this many rows of the evaluation data (all rows = no cap)")
        guard_wheel(self.task_combo, self.max_rows_spin)
        row = QHBoxLayout()
        row.addWidget(QLabel("Task:"))
        row.addWidget(self.task_combo)
        row.addSpacing(16)
        row.addWidget(QLabel("Max rows:"))
        row.addWidget(self.max_rows_spin)
        row.addStretch(1)
        self.lm_box = QWidget()
        self.lm_box.setObjectName("lm_settings")
        self.lm_form = ParamForm(LMSettings, self.doc.pipeline.evaluation.lm.model_dump(mode="json"), columns=3)
        lm_lay = QVBoxLayout(self.lm_box)
        lm_lay.setContentsMargins(0, 4, 0, 0)
        lm_title = QLabel("<b>Language model on a text file</b> — perplexity windows and the generations "
                          "side by side (hover a field for its meaning)")
        lm_lay.addWidget(lm_title)
        lm_lay.addWidget(self.lm_form)
        self.lm_box.hide()
        lay = QVBoxLayout(box)
        lay.addLayout(row)
        lay.addWidget(self.lm_box)
        self.task_combo.currentIndexChanged.connect(self._on_evaluation_edited)
        self.max_rows_spin.valueChanged.connect(self._on_evaluation_edited)
        self.lm_form.params_edited.connect(self._on_lm_form_params_edited)
        return box

    def _on_evaluation_edited(self, *_: Any) -> None:
        rows = self.max_rows_spin.value()
        self.doc.set_evaluation(task=self.task_combo.currentData(), max_rows=rows or None)

    def _on_lm_form_params_edited(self, params: dict[str, Any], field: str) -> None:
        from slimline.core.pipeline import LMSettings

        self.doc.set_evaluation(merge_key=f"lm.{field}", lm=LMSettings.model_validate(params))

    def is_language_model(self) -> bool:
        """Whether the language-model settings apply: the task says so, or the open model is a causal LM."""
        task = self.doc.pipeline.evaluation.task
        if task is not None:
            return bool(task == "token_logits")
        if self.model is None:
            return False
        from slimline.core.lm.evaluate import causal_lm_guess

        try:
            return causal_lm_guess(self.model) is not None
        except Exception:  # noqa: BLE001 - a handle the guess cannot read is simply not shown as an LM
            return False

    def _show_evaluation(self) -> None:
        ev = self.doc.pipeline.evaluation
        for w in (self.task_combo, self.max_rows_spin):
            w.blockSignals(True)
        i = self.task_combo.findData(ev.task)
        self.task_combo.setCurrentIndex(i if i >= 0 else 0)
        self.max_rows_spin.setValue(int(ev.max_rows or 0))
        for w in (self.task_combo, self.max_rows_spin):
            w.blockSignals(False)
        lm = ev.lm.model_dump(mode="json")
        if not self.lm_form.is_valid or self.lm_form.validate()[1] != lm:
            self.lm_form.set_values(lm)  # a loaded file or undo/redo changed it under the form
        self.lm_form.base_dir = str(Path(self.doc.path).parent) if self.doc.path else ""
        self.lm_box.setVisible(self.is_language_model())

    # --- document → views --------------------------------------------------------------
    def _on_doc_changed(self) -> None:
        self._show_evaluation()
        steps = self.doc.steps
        titles = {s.plugin: plugin_title(s.plugin) for s in steps}
        inp = f"Input:\n{self.model.name}\n({self.model.family})  →" if self.model is not None else ""
        self.lane.set_steps(steps, titles, inp)
        for sid, (text, flags) in self.step_status.items():
            if sid in self.lane.cards:
                self.lane.cards[sid].set_status(text, flags)
        for sid, (res, orig) in self.step_results.items():
            if sid in self.lane.cards:
                self.lane.cards[sid].set_result(res, orig)
        self._check_chain()
        if self.lane.selected:
            self._show_form(self.lane.selected)
        else:
            self._show_form("")

    def _check_chain(self) -> None:
        self.problems = {}
        if self.model is None:
            self.chain_label.setText("Open a model to check the pipeline against it.")
            return
        from slimline.core.pipeline import check_chain

        try:  # the same check `slimline run` makes: what runs there is accepted here
            found = check_chain(self.doc.pipeline, self.model)
        except Exception as exc:  # a broken plugin's check must not break the editor
            self.chain_label.setText(f"Could not check the pipeline: {getattr(exc, 'message', exc)}")
            return
        for sid, prob in found:
            self.problems.setdefault(sid, []).append(prob)
        from slimline.core.registry import discover

        can_fix = CONVERT_ONNX in discover() and discover()[CONVERT_ONNX].ok
        for sid, card in self.lane.cards.items():
            probs = self.problems.get(sid, [])
            step = self.doc.step(sid)
            if step is not None and step.placeholder_reason:
                continue
            fix = can_fix and any("convert" in (p.fix or "").lower() and "onnx" in (p.fix or "").lower() for p in probs)
            card.set_problems([str(p) for p in probs], fix=fix)
        errors = sum(1 for ps in self.problems.values() for p in ps if p.severity == "error")
        self.chain_label.setText(f"⚠ {errors} problem(s) in the pipeline — see the cards." if errors else
                                 ("Format chain OK." if self.doc.steps else ""))

    def _show_form(self, step_id: str) -> None:
        from slimline.core.registry import discover

        step = self.doc.step(step_id) if step_id else None
        if step is None:
            self._set_form(None)
            self.form_info.setText("Select a step to edit its parameters.")
            return
        entry = discover().get(step.plugin)
        if entry is None or entry.plugin is None:
            self._set_form(None)
            self.form_info.setText(f"{step.plugin}: {step.placeholder_reason or 'plugin not available'}. "
                                   "Its parameters are kept as they are in the file.")
            return
        cls = entry.plugin
        self.form_info.setText(f"<b>{cls.title}</b> ({step.id}) — {cls.description}")
        if self.form is not None and self.form.property("step_id") == step_id and self.form.params_cls is cls.Params:
            if self.form.is_valid and self.form.validate()[1] != step.params:
                self.form.set_values(step.params)  # undo/redo changed it under the form
            return
        form = ParamForm(cls.Params, step.params)
        form.setProperty("step_id", step_id)
        form.params_edited.connect(lambda params, field, sid=step_id: self.doc.set_params(sid, params, field))
        self._set_form(form)

    def _set_form(self, form: ParamForm | None) -> None:
        old = self.form_scroll.takeWidget()
        if old is not None:
            old.deleteLater()
        self.form = form
        if form is not None:
            self.form_scroll.setWidget(form)

    # --- lane / palette → commands -----------------------------------------------------
    def _on_palette_plugin_activated(self, plugin_id: str) -> None:
        sid = self.doc.add_step(plugin_id)
        self.lane.select(sid)

    def _on_lane_add_requested(self, plugin_id: str, index: int) -> None:
        sid = self.doc.add_step(plugin_id, index)
        self.lane.select(sid)

    def _on_lane_duplicate_requested(self, step_id: str) -> None:
        self.lane.select(self.doc.duplicate_step(step_id))

    def _on_lane_fix_requested(self, step_id: str) -> None:
        self.doc.insert_conversion_before(step_id)

    def _on_lane_step_selected(self, step_id: str) -> None:
        self._show_form(step_id)
        self.step_selected.emit(step_id)


if __name__ == "__main__":  # python -m slimline.gui.pipeline_editor [PIPELINE]
    import sys

    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv)
    ed = PipelineEditor()
    if len(sys.argv) > 1:
        ed.doc.load(sys.argv[1])
    ed.resize(1300, 750)
    ed.show()
    sys.exit(app.exec())
