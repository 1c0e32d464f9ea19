"""Models nobody here made: menu opening, long names, wheel over forms, real-valued overlays, task and noise."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from slimline.core.models import open_model


def _float_and_quantized(tmp_path: Path) -> tuple[Path, Path]:
    """fc.weight (float) in the original; the variant stores it int8 with a per-channel DequantizeLinear."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.05, (4, 3)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    orig = helper.make_graph([helper.make_node("MatMul", ["x", "fc.weight"], ["y"]),],
                             "g", [x], [y], [numpy_helper.from_array(w, "fc.weight"),
                                             numpy_helper.from_array(w[:, :1].copy(), "gone.weight")])
    orig.node.append(helper.make_node("MatMul", ["x", "gone.weight"], ["z"]))
    scale = (np.abs(w).max(axis=0) / 127).astype(np.float32)
    q = np.round(w / scale).astype(np.int8)
    var = helper.make_graph([helper.make_node("DequantizeLinear", ["fc.weight_quantized", "fc.weight_scale",
                                                                   "fc.weight_zero_point"], ["w"], axis=1),
                             helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y],
                            [numpy_helper.from_array(q, "fc.weight_quantized"),
                             numpy_helper.from_array(scale, "fc.weight_scale"),
                             numpy_helper.from_array(np.zeros(3, np.int8), "fc.weight_zero_point")])
    paths = []
    for g, name in ((orig, "orig.onnx"), (var, "var.onnx")):
        p = tmp_path / name
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), p)
        paths.append(p)
    return paths[0], paths[1]


def test_overlay_dequantizes_and_names_missing_layers(qtbot, tmp_path):
    from slimline.gui.inspector import InspectorView

    orig, var = _float_and_quantized(tmp_path)
    view = InspectorView()
    qtbot.addWidget(view)
    view.set_handle(open_model(orig))
    qtbot.waitUntil(lambda: view.layers.model.rowCount() >= 2, timeout=20000)
    view.set_variant(open_model(var), "s1")
    view.select_layers(["fc.weight"])
    qtbot.waitUntil(lambda: any(s.role == "after" for s in view.histogram.series), timeout=20000)
    before = next(s for s in view.histogram.series if s.role == "before")
    after = next(s for s in view.histogram.series if s.role == "after")
    # real values: the ranges agree to within a quantization step, not int8 codes (±127)
    assert abs(after.edges[-1] - before.edges[-1]) < 0.01 and abs(after.edges[0] - before.edges[0]) < 0.01
    assert not view.no_counterpart.isVisible()
    view.show()
    view.select_layers(["gone.weight"])
    qtbot.waitUntil(lambda: view.no_counterpart.isVisible(), timeout=20000)
    assert "No counterpart" in view.no_counterpart.text() and "gone.weight" in view.no_counterpart.text()


def test_open_dialog_filter_lists_the_formats():
    from slimline.gui.window_parts import MODEL_FILTER

    for ext in ("*.onnx", "*.jit", "*.pt", "*.pt2", "*.gguf", "*.safetensors"):
        assert ext in MODEL_FILTER.split(";;")[0]


def test_menu_opens_image_folder_and_text_file(window, qtbot, monkeypatch, tmp_path):
    from PySide6.QtWidgets import QFileDialog

    opened: list[str] = []
    monkeypatch.setattr(window.ctl, "open_data", lambda p: opened.append(p))
    folder = tmp_path / "imgs"
    folder.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(folder)))
    file_menu = window.menuBar().actions()[0].menu()
    texts = [a.text() for a in file_menu.actions()]
    assert window.act_open_images.text() in texts and window.act_open_text.text() in texts
    window.act_open_images.trigger()
    text = tmp_path / "lines.txt"
    text.write_text("a\nb\n")
    seen_filter: list[str] = []

    def fake_open(_parent, _title, _dir, filters):
        seen_filter.append(filters)
        return str(text), ""
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(fake_open))
    window.act_open_text.trigger()
    assert opened == [str(folder), str(text)]
    assert "*.txt" in seen_filter[0]


def test_long_model_name_never_widens_the_window_past_the_screen(window, qtbot, make_onnx_mlp, tmp_path):
    import shutil

    from PySide6.QtGui import QGuiApplication

    src, _data = make_onnx_mlp()
    long = tmp_path / ("m" * 245 + ".onnx")
    shutil.copy(src, long)
    window.show()
    avail = QGuiApplication.primaryScreen().availableGeometry().width()
    with qtbot.waitSignal(window.model_opened, timeout=30000):
        window.open_model(str(long))
    qtbot.wait(50)
    for tab in range(window.tabs.count()):
        window.tabs.setCurrentIndex(tab)
        qtbot.wait(20)
        assert window.width() <= avail, window.tabs.tabText(tab)
        assert window.minimumSizeHint().width() <= avail, window.tabs.tabText(tab)
    assert "m" * 245 in window.model_label.toolTip() + window.model_label.text()


def _wheel(widget, qtbot, delta: int = -120) -> None:
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    pos = QPointF(widget.width() / 2, widget.height() / 2)
    glob = QPointF(widget.mapToGlobal(QPoint(int(pos.x()), int(pos.y()))))
    ev = QWheelEvent(pos, glob, QPoint(0, 0), QPoint(0, delta), Qt.MouseButton.NoButton,
                     Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, ev)


def test_wheel_over_form_scrolls_and_keeps_values(qtbot):
    from typing import Literal

    from pydantic import BaseModel, Field
    from PySide6.QtWidgets import QComboBox, QScrollArea, QSpinBox

    from slimline.gui.param_form import ParamForm

    class P(BaseModel):
        mode: Literal["a", "b", "c"] = "b"
        n: int = Field(5, ge=0, le=100)
        x: float = Field(0.5, ge=0, le=1)
        t1: str = ""
        t2: str = ""
        t3: str = ""
        t4: str = ""

    form = ParamForm(P, {})
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setWidget(form)
    area.resize(300, 120)
    qtbot.addWidget(area)
    area.show()
    qtbot.waitExposed(area)
    bar = area.verticalScrollBar()
    assert bar.maximum() > 0
    combo, spin = form.editors["mode"], form.editors["n"]
    assert isinstance(combo, QComboBox) and isinstance(spin, QSpinBox)
    before = (combo.currentIndex(), spin.value(), form.editors["x"].value())
    _wheel(combo, qtbot)
    assert bar.value() > 0
    moved = bar.value()
    _wheel(spin, qtbot)
    _wheel(form.editors["x"], qtbot)
    assert (combo.currentIndex(), spin.value(), form.editors["x"].value()) == before
    assert bar.value() >= moved


def test_evaluation_task_and_max_rows_edited_in_the_pipeline_editor(window, qtbot):
    ed = window.editor
    ed.task_combo.setCurrentIndex(ed.task_combo.findData("embedding"))
    ed.max_rows_spin.setValue(500)
    ev = window.doc.pipeline.evaluation
    assert (ev.task, ev.max_rows) == ("embedding", 500)
    assert window.doc.modified
    ed.max_rows_spin.setValue(0)
    assert window.doc.pipeline.evaluation.max_rows is None
    window.doc.undo_stack.undo()
    assert window.doc.pipeline.evaluation.max_rows == 500 and ed.max_rows_spin.value() == 500
    while window.doc.undo_stack.canUndo():
        window.doc.undo_stack.undo()
    assert window.doc.pipeline.evaluation.task is None and ed.task_combo.currentData() is None


_FID = {"n": 64, "mean_cosine": 0.998, "min_cosine": 0.99, "max_abs_error": 0.01, "top1_agreement": 1.0,
        "input_kind": "dataset", "dataset": "sentences.txt", "task": "embedding",
        "task_reason": "HF config names a sentence-embedding architecture", "metric": "pooled cosine", "value": 0.998}


def test_progress_shows_during_the_original_step(window, qtbot):
    from slimline.core.results import ProgressEvent, StepStartedEvent

    rv, r = window.run_view, window.controller
    rv.reset("ctx")
    r._dispatch(StepStartedEvent(step_id="original", index=0, total=3, title="Original model"))
    r._dispatch(ProgressEvent(overall=0.2, step_id="original", fraction=0.6,
                              message="evaluating 30/50 rows, 100 rows/s, ETA 0 s"))
    assert rv.step_bar.value() == 60 and rv.overall.value() == 20
    assert "Original" in rv.step_bar.format()
    assert rv.message.text().startswith("Original model: evaluating 30/50 rows")
    rv.reset("ctx")  # progress before the start event still names the step
    r._dispatch(ProgressEvent(overall=0.1, step_id="original", fraction=0.3, message="timing batch 1"))
    assert rv.step_bar.value() == 30 and rv.message.text() == "Original model: timing batch 1"


def test_task_line_appears_after_a_run(window, qtbot, as_result):
    charts = window.run_view.charts
    assert not charts.task_label.isVisibleTo(charts)
    charts.add_result(as_result({"step_id": "original", "title": "Original"}))
    charts.add_result(as_result({"step_id": "s1", "title": "Quantize", "fidelity": _FID}))
    charts.flush()
    text = charts.task_label.text()
    assert charts.task_label.isVisibleTo(charts)
    assert text == "task: embedding (HF config names a sentence-embedding architecture); fidelity = pooled cosine"
    charts.clear()
    assert not charts.task_label.isVisibleTo(charts)


def test_noisy_flag_is_muted_with_reasons_in_the_tooltip(qtbot, as_result):
    from slimline.core.pipeline import StepSpec
    from slimline.gui.step_charts import StepCharts
    from slimline.gui.step_lane import StepCard
    from slimline.gui.theme import flag_text, muted_text

    why = "latency at batch 1 is noisy, no slower/faster conclusion (machine busy: load 3.2 on 2 cores)"
    noisy = as_result({"step_id": "s1", "title": "Prune", "flags": ["noisy"], "warnings": [why],
                       "latency": {"1": {"p50_ms": 1.0, "noisy": True, "noise_reasons": ["machine busy"]}}})
    card = StepCard(StepSpec(id="s1", plugin="builtin.quantize_static"), 0, "Prune")
    qtbot.addWidget(card)
    card.set_result(noisy, None)
    assert not card.flags_label.isVisibleTo(card)  # not shown as a failure
    assert card.noisy_label.isVisibleTo(card) and "noisy" in card.noisy_label.text()
    assert muted_text() in card.noisy_label.styleSheet() and flag_text() not in card.noisy_label.styleSheet()
    assert "machine busy" in card.noisy_label.toolTip() and why in card.noisy_label.toolTip()
    both = as_result({"step_id": "s2", "title": "Q", "flags": ["bigger", "noisy"],
                      "warnings": ["bigger: 2 MB vs 1 MB", why]})
    card.set_result(both, None)
    assert card.flags_label.text() == "⚑ bigger" and "noisy" not in card.flags_label.toolTip()
    assert card.noisy_label.isVisibleTo(card)
    charts = StepCharts()
    qtbot.addWidget(charts)
    charts.add_result(noisy)
    charts.flush()
    assert muted_text() in charts.note.text() and flag_text() not in charts.note.text()
    assert "machine busy" in charts.note.toolTip()
