"""Opening by drag and drop: models, bad files, pickles (trust), pipelines and datasets."""
from __future__ import annotations

from pathlib import Path

from conftest import drop_paths


def _demo_model() -> Path:
    from slimline.core.demo import demo_paths

    return demo_paths()["torch"]


def test_drop_model_shows_layers_and_histogram(window, qtbot):
    target = window.tabs  # a child: the drop must work anywhere on the window
    with qtbot.waitSignal(window.model_opened, timeout=30000):
        drop_paths(target, [_demo_model()])
    insp = window.inspector
    from slimline.core.stats import layer_inventory

    n = len(layer_inventory(window.handle))
    assert n > 10 and insp.layers.model.rowCount() == n
    assert window.tabs.currentWidget() is insp
    qtbot.waitUntil(lambda: len(insp.histogram.series) >= 1, timeout=20000)
    s = insp.histogram.series[0]
    assert s.counts.sum() == s.n > 0
    assert insp.histogram.plotted_item_count() >= 1
    with qtbot.waitSignal(insp.stats_ready, timeout=30000, raising=False):
        pass
    qtbot.waitUntil(lambda: insp.layers.model.rows()[0].std is not None, timeout=30000)
    assert insp.overview.point_count() == n
    assert "767,722 params" in window.model_label.text()
    assert insp.summary.fields["params"].text() == "767,722"
    assert "batch" in insp.summary.dim_spins


def test_drop_bad_file_shows_message_and_changes_nothing(window, qtbot, tmp_path):
    with qtbot.waitSignal(window.model_opened, timeout=30000):
        window.open_model(str(_demo_model()))
    before = window.handle
    rows_before = window.inspector.layers.model.rowCount()
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x01garbage that is not a protobuf" * 10)
    with qtbot.waitSignal(window.model_open_failed, timeout=30000) as sig:
        drop_paths(window, [bad])
    msg = sig.args[0]
    assert window.banner.isVisible()
    assert msg.message and "Traceback" not in msg.message
    assert "broken.onnx" in (msg.subject + msg.message + window.banner.label.text())
    assert msg.details  # behind "Show details"
    assert window.banner.details_button.isVisibleTo(window)
    assert window.handle is before
    assert window.inspector.layers.model.rowCount() == rows_before


def test_pickled_model_asks_for_trust(window, qtbot, tmp_path):
    import torch

    path = tmp_path / "full.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 2)), path)
    window.open_model(str(path))
    qtbot.waitUntil(lambda: window.trust_box is not None, timeout=30000)
    box = window.trust_box
    assert "Trust" in box.windowTitle()
    assert box.text()  # the reason from the engine
    # refuse: nothing opened, a message says why
    with qtbot.waitSignal(window.model_open_failed, timeout=5000):
        box.button(box.StandardButton.Cancel).click()
    assert window.handle is None
    # accept: reopened with trust=True
    window.open_model(str(path))
    qtbot.waitUntil(lambda: window.trust_box is not None, timeout=30000)
    trust_button = next(b for b in window.trust_box.buttons() if "Trust" in b.text())
    with qtbot.waitSignal(window.model_opened, timeout=30000):
        trust_button.click()
    assert window.handle is not None and window.trusted


def test_drop_dataset_and_pipeline(window, qtbot, tiny_model, tmp_path):
    model, data = tiny_model
    with qtbot.waitSignal(window.data_loaded, timeout=30000):
        drop_paths(window, [model, data])
    assert window.handle is not None
    assert window.data_path == str(data)
    assert "n=64" in window.data_label.text()
    pipe = tmp_path / "p.json"
    pipe.write_text('{"format": "slimline.pipeline", "schema_version": 1, "name": "dropped", '
                    '"steps": [{"id": "s1", "plugin": "builtin.convert_onnx", "params": {}}]}')
    with qtbot.waitSignal(window.pipeline_loaded, timeout=5000):
        drop_paths(window, [pipe])
    assert window.doc.pipeline.name == "dropped"
    assert list(window.editor.lane.cards) == ["s1"]
    from slimline.gui import settings as st

    assert str(pipe.resolve()) in st.recent_files()


def test_bad_pipeline_and_bad_dataset_messages(window, qtbot, tmp_path, tiny_model):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "slimline.pipeline", "steps": [{"id": "s1", "plugin": "builtin.convert_onnx", '
                   '"params": {"opset": "eighteen"}}]}')
    window.open_pipeline(str(bad))
    assert window.banner.isVisible()
    assert "s1" in window.banner.label.text() and "opset" in window.banner.label.text()
    assert window.doc.steps == []
    model, _ = tiny_model
    with qtbot.waitSignal(window.model_opened, timeout=30000):
        window.open_model(str(model))
    wrong = tmp_path / "wrong.npz"
    import numpy as np

    np.savez(wrong, x=np.zeros((4, 3), np.float32))
    window.open_data(str(wrong))
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=20000)
    assert window.data_path == ""
