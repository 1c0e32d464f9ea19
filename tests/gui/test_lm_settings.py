"""The pipeline's language-model settings in the window: a form generated from LMSettings, undoable,
shown for causal LMs, and what it holds is what the run gets."""
from __future__ import annotations

import json

from PySide6.QtWidgets import QLineEdit, QSpinBox

from slimline.core.handle import ModelHandle, TensorSpec


def lm_handle(tmp_path, arch: str = "LlamaForCausalLM") -> ModelHandle:
    folder = tmp_path / "lm"
    folder.mkdir(exist_ok=True)
    return ModelHandle(path=str(folder), format="hf", family="torch", param_count=10,
                       inputs=[TensorSpec(name="input_ids", shape=["batch", "sequence"], dtype="int64")],
                       meta={"architectures": [arch]})


def show_model(window, qtbot, handle) -> None:
    window.session.set_model(handle, handle.path, False, [])
    qtbot.waitUntil(lambda: window.editor.model is handle, timeout=5000)


def test_lm_fields_reach_the_pipeline_the_window_runs(window, qtbot, tmp_path, test_plugins, monkeypatch):
    ed = window.editor
    assert ed.lm_box.isHidden()                       # no model: no language-model settings
    show_model(window, qtbot, lm_handle(tmp_path))
    assert not ed.lm_box.isHidden()
    form = ed.lm_form
    assert set(form.editors) == {"window_length", "window_count", "stride", "prompts", "prompt_count",
                                 "max_new_tokens"}    # every LMSettings field, from the model itself
    count = form.editors["window_count"]
    assert isinstance(count, QSpinBox) and count.minimum() == 1
    assert "Windows of the text file" in count.toolTip()
    count.setValue(5)
    stride = form.editors["stride"]
    assert isinstance(stride, QLineEdit)
    stride.clear()
    qtbot.keyClicks(stride, "64")
    form.editors["max_new_tokens"].setValue(9)
    window.doc.add_step("test.scale")
    started: list = []
    monkeypatch.setattr(window.ctl.runner, "start", lambda pipe, *a, **k: started.append(pipe))
    window.run_pipeline()
    assert started, "the run did not start"
    lm = json.loads(started[0].to_json())["evaluation"]["lm"]
    assert (lm["window_count"], lm["stride"], lm["max_new_tokens"], lm["window_length"]) == (5, 64, 9, 128)
    # typing "64" is one undo step; undo shows the old value in the form
    window.doc.undo_stack.undo()                      # the added step
    window.doc.undo_stack.undo()
    assert window.doc.pipeline.evaluation.lm.max_new_tokens == 32
    assert form.editors["max_new_tokens"].value() == 32
    window.doc.undo_stack.undo()
    assert window.doc.pipeline.evaluation.lm.stride is None and stride.text() == ""
    window.doc.undo_stack.undo()
    assert window.doc.pipeline.evaluation.lm.window_count == 24 and count.value() == 24


def test_invalid_lm_field_is_refused_and_named(window, qtbot, tmp_path):
    show_model(window, qtbot, lm_handle(tmp_path))
    stride = window.editor.lm_form.editors["stride"]
    qtbot.keyClicks(stride, "0")
    assert "stride" in window.editor.lm_form.field_errors()
    assert window.doc.pipeline.evaluation.lm.stride is None   # the pipeline never holds what the run would refuse


def test_lm_settings_only_for_language_models(window, qtbot, tmp_path):
    ed = window.editor
    show_model(window, qtbot, lm_handle(tmp_path, arch="BertForSequenceClassification"))
    assert ed.lm_box.isHidden()
    i = ed.task_combo.findData("token_logits")
    ed.task_combo.setCurrentIndex(i)                  # the user says it is a language model
    assert not ed.lm_box.isHidden()
    window.doc.undo_stack.undo()
    assert ed.lm_box.isHidden()


def test_loaded_pipeline_fills_the_form(window, qtbot, tmp_path):
    from pathlib import Path

    demo = Path(__file__).resolve().parents[2] / "resources" / "demo" / "llm_pipeline.json"
    show_model(window, qtbot, lm_handle(tmp_path))
    window.open_pipeline(str(demo))
    form = window.editor.lm_form
    want = json.loads(demo.read_text())["evaluation"]["lm"]
    assert {k: form.raw_values()[k] for k in want} == want


def test_optional_bool_stays_empty_when_another_field_changes(qtbot):
    """`bool | None` (empty = the preset's choice) is a yes/no/(none) choice: a check box turned None into False."""
    from pydantic import Field
    from PySide6.QtWidgets import QComboBox

    from slimline.core.plugin import PluginParams
    from slimline.gui.param_form import ParamForm

    class P(PluginParams):
        symmetric: bool | None = Field(None, description="empty: the preset's")
        block: int = Field(32, ge=16, le=256)

    form = ParamForm(P, {})
    qtbot.addWidget(form)
    got: list[dict] = []
    form.params_edited.connect(lambda p, _f: got.append(p))
    tri = form.editors["symmetric"]
    assert isinstance(tri, QComboBox) and tri.currentData() is None
    form.editors["block"].setValue(64)
    assert got[-1] == {"symmetric": None, "block": 64}
    tri.setCurrentIndex(tri.findData(False))
    assert got[-1] == {"symmetric": False, "block": 64}
    form.set_values({"symmetric": True, "block": 64})
    assert tri.currentText() == "yes"
