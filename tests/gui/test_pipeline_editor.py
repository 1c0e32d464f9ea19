"""Building pipelines visually: palette, lane, forms, chain fixes, undo/redo, save/load."""
from __future__ import annotations

import json

import pytest
from conftest import send_drop
from PySide6.QtCore import QPointF, Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox

from slimline.core.handle import ModelHandle, TensorSpec


def torch_handle(tmp_path) -> ModelHandle:
    return ModelHandle(path=str(tmp_path / "m.safetensors"), format="slimline_torch", family="torch",
                       inputs=[TensorSpec(name="x", shape=["batch", 4])], param_count=10)


def double_click_palette(qtbot, editor, plugin_id: str) -> None:
    tree = editor.palette_view.tree
    item = editor.palette_view.items[plugin_id]
    tree.scrollToItem(item)
    rect = tree.visualItemRect(item)
    qtbot.mouseClick(tree.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(tree.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def drag_palette_to_lane(editor, plugin_id: str, x: float) -> None:
    tree = editor.palette_view.tree
    mime = tree.mimeData([editor.palette_view.items[plugin_id]])
    send_drop(editor.lane.viewport(), mime, QPointF(x, editor.lane.height() / 2))


def card_x(editor, step_id: str, side: str) -> float:
    card = editor.lane.cards[step_id]
    pt = card.mapTo(editor.lane.viewport(), card.rect().topLeft())
    return pt.x() + (5 if side == "left" else card.width() - 5)


@pytest.fixture
def editor(qtbot, test_plugins):
    from slimline.gui.pipeline_editor import PipelineEditor

    ed = PipelineEditor()
    qtbot.addWidget(ed)
    ed.resize(1400, 800)
    ed.show()
    qtbot.waitExposed(ed)
    return ed


def expected_step(sid: str, plugin: str, params: dict) -> dict:
    return {"id": sid, "plugin": plugin, "plugin_version": "1", "enabled": True, "params": params}


def test_build_three_steps_by_palette_and_save(editor, qtbot, tmp_path):
    from slimline.core.pipeline import Pipeline

    double_click_palette(qtbot, editor, "test.scale")
    double_click_palette(qtbot, editor, "test.onnx_only")
    assert list(editor.lane.cards) == ["s1", "s2"]
    # drag the third from the palette to the front of the lane
    drag_palette_to_lane(editor, "test.noop", card_x(editor, "s1", "left"))
    assert [s.plugin for s in editor.doc.steps] == ["test.noop", "test.scale", "test.onnx_only"]
    # edit s2's factor in its generated form
    editor.select_step("s1")
    spin = editor.form.editors["factor"]
    assert isinstance(spin, QDoubleSpinBox) and spin.minimum() == 0.0 and spin.maximum() == 1.0
    assert "Multiply every weight" in spin.toolTip()
    assert isinstance(editor.form.editors["mode"], QComboBox)
    assert isinstance(editor.form.editors["keep_bias"], QCheckBox)
    assert isinstance(editor.form.editors["rounds"], QSpinBox)
    assert isinstance(editor.form.editors["skip"], QLineEdit)
    spin.setValue(0.25)
    editor.form.editors["skip"].setText("fc1, fc2")
    out = tmp_path / "three.json"
    editor.doc.save(str(out))
    scale = {"factor": 0.25, "mode": "all", "keep_bias": True, "skip": ["fc1", "fc2"], "rounds": 1, "epochs_at": [1, 2]}
    expected = {"format": "slimline.pipeline", "schema_version": 1, "name": "untitled",
                "steps": [expected_step("s3", "test.noop", {}), expected_step("s1", "test.scale", scale),
                          expected_step("s2", "test.onnx_only", {"bits": 8})],
                "evaluation": Pipeline().evaluation.model_dump(mode="json")}
    assert json.loads(out.read_text()) == expected
    assert not editor.doc.modified
    # and it loads back identically
    from slimline.gui.pipeline_doc import PipelineDocument

    doc2 = PipelineDocument()
    doc2.load(str(out))
    assert doc2.pipeline.model_dump(mode="json") == expected


def test_undo_redo_every_edit(editor, qtbot):
    doc, stack = editor.doc, editor.doc.undo_stack
    snapshots = [doc.pipeline.to_json()]

    def edit(fn):
        fn()
        snapshots.append(doc.pipeline.to_json())

    edit(lambda: double_click_palette(qtbot, editor, "test.scale"))
    edit(lambda: double_click_palette(qtbot, editor, "test.noop"))
    edit(lambda: editor.lane.cards["s1"].dup_button.click())
    assert [s.id for s in doc.steps] == ["s1", "s3", "s2"]
    edit(lambda: editor.lane.cards["s3"].enabled_check.setChecked(False))
    assert doc.step("s3").enabled is False
    edit(lambda: editor.lane.cards["s2"].remove_button.click())
    editor.select_step("s1")
    spin = editor.form.editors["factor"]
    edit(lambda: (spin.setValue(0.3), spin.setValue(0.35), spin.setValue(0.4)))  # merged into one command
    assert doc.step("s1").params["factor"] == 0.4
    # reorder by dragging s3's card in front of s1
    from PySide6.QtCore import QMimeData

    from slimline.gui.step_lane import STEP_MIME

    mime = QMimeData()
    mime.setData(STEP_MIME, b"s3")
    edit(lambda: editor.lane.drop_mime(mime, card_x(editor, "s1", "left")))
    assert [s.id for s in doc.steps] == ["s3", "s1"]
    assert stack.count() == len(snapshots) - 1
    for expected in reversed(snapshots[:-1]):
        stack.undo()
        assert doc.pipeline.to_json() == expected
    for expected in snapshots[1:]:
        stack.redo()
        assert doc.pipeline.to_json() == expected
    # the open form follows undo
    editor.select_step("s1")
    stack.undo()  # undo the move
    stack.undo()  # undo the factor edit
    assert editor.form.editors["factor"].value() == pytest.approx(0.5)


def test_form_validates_as_you_type(editor, qtbot):
    double_click_palette(qtbot, editor, "test.scale")
    form = editor.form
    edit = form.editors["epochs_at"]
    edit.setText("1, x")
    assert not form.is_valid
    assert "epochs_at" in form.field_errors()
    assert "border" in edit.styleSheet()
    assert editor.doc.step("s1").params["epochs_at"] == [1, 2]  # invalid input never reaches the pipeline
    edit.setText("3, 4")
    assert form.is_valid and form.field_errors() == {}
    assert editor.doc.step("s1").params["epochs_at"] == [3, 4]


def test_palette_greys_inapplicable_and_search(editor, tmp_path):
    editor.set_model(torch_handle(tmp_path))
    pal = editor.palette_view
    assert pal.reason("test.onnx_only")
    assert "Cannot apply" in pal.items["test.onnx_only"].toolTip(0)
    assert pal.reason("test.scale") == ""
    pal.search.setText("no-op")
    assert "test.noop" in pal.visible_ids() and "test.scale" not in pal.visible_ids()
    pal.search.setText("")
    assert {"test.noop", "test.scale", "test.onnx_only"} <= set(pal.visible_ids())


def test_format_mismatch_one_click_fix(editor, qtbot, tmp_path):
    editor.set_model(torch_handle(tmp_path))
    double_click_palette(qtbot, editor, "test.onnx_only")
    card = editor.lane.cards["s1"]
    assert not card.problem_label.isHidden() and "onnx" in card.problem_label.text()
    assert not card.fix_button.isHidden()
    card.fix_button.click()
    assert [s.plugin for s in editor.doc.steps] == ["builtin.convert_onnx", "test.onnx_only"]
    assert editor.lane.cards["s1"].problem_label.isHidden()
    assert "OK" in editor.chain_label.text()
    editor.doc.undo_stack.undo()
    assert [s.plugin for s in editor.doc.steps] == ["test.onnx_only"]


def test_unsaved_changes_prompt_on_close(window, qtbot, test_plugins):
    window.editor.palette_view.reload()
    window.doc.add_step("test.scale")
    answers = ["cancel"]
    window.ask_unsaved = lambda: answers.pop(0)
    assert window.close() is False and window.isVisible()
    window.ask_unsaved = lambda: "discard"
    assert window.close() is True
