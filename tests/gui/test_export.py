"""Export from the window: the selected variant is preselected, the file is written and verified."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

import slimline.core.export  # noqa: F401  (a broken engine import must fail these tests, not skip them)


@pytest.fixture
def onnx_run(isolated_settings, tmp_path):
    """A recorded run whose variant is a real ONNX file, with labelled evaluation data."""
    import numpy as np
    import torch

    from slimline.core.models import open_model

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    path = tmp_path / "mlp.onnx"
    with warnings.catch_warnings():  # the legacy exporter is deprecated, and fast: fine for a fixture
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 16),), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    x = np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32)
    with torch.no_grad():
        labels = net(torch.from_numpy(x)).argmax(1).numpy()
    data = tmp_path / "eval.npz"
    np.savez(data, x=x, labels=labels)
    handle = open_model(path)
    run_id = "20260301-000000-cccccc"
    res = {"step_id": "original", "title": "Original (mlp.onnx)", "model": handle.model_dump(mode="json"),
           "size": {"bytes_on_disk": handle.bytes_on_disk, "param_count": handle.param_count},
           "flags": [], "warnings": [],
           "latency": {"1": {"p50_ms": 0.05, "p90_ms": 0.06, "min_ms": 0.04, "max_ms": 0.09, "mean_ms": 0.05,
                             "std_ms": 0.01, "batch": 1, "runs": 5, "warmup": 1, "input_kind": "dataset", "threads": 1,
                             "spread": 0.2, "input_shapes": {"x": [1, 16]},
                             "provider": "CPUExecutionProvider", "device_name": "cpu"}},
           "accuracy": {"dataset": "eval.npz", "n": 40, "top1": 1.0}}
    record = {"run_id": run_id, "status": "done", "created": "2026-03-01T00:00:00", "pipeline": {"name": "p"},
              "model": handle.model_dump(mode="json"), "data": {"eval": str(data)}, "results": [res]}
    rd = Path(isolated_settings.workspace) / "runs" / run_id
    rd.mkdir(parents=True)
    (rd / "run.json").write_text(json.dumps(record))
    return f"{run_id}/original", rd


def _dialog_for(qtbot, key):
    from PySide6.QtCore import Qt

    from slimline.gui.main_window import MainWindow

    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.variants.variant(key) is not None, timeout=10000)
    with qtbot.waitSignal(win.variants.variant_selected, timeout=2000):
        win.variants.select(key)
    qtbot.keyClick(win, "e", modifier=Qt.KeyboardModifier.ControlModifier)
    return win, win.export_dialog


def test_export_selected_variant_as_onnx_shows_parity(qtbot, onnx_run, tmp_path):
    key, run_dir = onnx_run
    win, dlg = _dialog_for(qtbot, key)
    assert dlg.selected_variant().key == key                      # preselected from the results
    fmts = {dlg.format_combo.itemData(i): dlg.format_combo.model().item(i).isEnabled()
            for i in range(dlg.format_combo.count())}
    assert fmts["onnx"] and fmts["bundle"] and fmts["safetensors"]
    assert not fmts["torchscript"] and not fmts["pt2"]            # an ONNX variant cannot become TorchScript
    out = tmp_path / "deploy"
    dlg.context_spin.setValue(2048)
    for fmt in ("bundle", "onnx"):   # the model builder's cap: only for a causal LM it builds from
        dlg.set_format(fmt)
        assert not dlg.context_spin.isEnabled() and dlg.spec()["lm_context_length"] == 0
    dlg.out_edit.setText(str(out))
    with qtbot.waitSignal(dlg.exported, timeout=120000):
        qtbot.mouseClick(dlg.export_button, __import__("PySide6.QtCore", fromlist=["Qt"]).Qt.MouseButton.LeftButton)
    written = out / f"{dlg.name_edit.text()}.onnx"
    assert written.is_file()
    text = dlg.parity_label.text()
    assert dlg.parity_label.isVisibleTo(dlg)
    assert "40 rows of eval.npz" in text and "max abs error" in text and "passed" in text, text
    assert dlg.result_record.parity.passed is True
    exports = json.loads((run_dir / "exports.json").read_text())  # the run's report will list it
    assert exports and exports[-1]["path"] == str(written)

    # exporting again asks before overwriting; "no" leaves the file alone
    asked = []
    dlg.confirm_overwrite = lambda names: asked.append(names) or False
    before = written.stat().st_mtime_ns
    qtbot.mouseClick(dlg.export_button, __import__("PySide6.QtCore", fromlist=["Qt"]).Qt.MouseButton.LeftButton)
    assert asked == [[written.name]]
    assert not dlg.running and "nothing was overwritten" in dlg.status.text()
    assert written.stat().st_mtime_ns == before
    dlg.reject()


def test_failed_parity_is_an_error(qtbot, onnx_run):
    from slimline.core.results import FailedEvent

    key, _ = onnx_run
    win, dlg = _dialog_for(qtbot, key)
    got = []
    dlg.export_failed.connect(got.append)
    dlg._on_export_failed(FailedEvent(message="max abs error 0.3 > 0.001", hint="export at higher precision",
                                      error_type="ParityError"))
    assert got and "Parity check FAILED" in dlg.status.text() and "nothing was kept" in dlg.status.text()
    from slimline.gui.theme import flag_text

    assert flag_text() in dlg.status.styleSheet()
    from slimline.core.export.records import Parity
    from slimline.gui.export_dialog import describe_parity

    text, passed = describe_parity(Parity(kind="outputs", runtime="onnxruntime", precision="int8", n=16,
                                          input_kind="random", max_abs_error=0.2, max_abs_allowed=0.05,
                                          passed=False, failures=["max abs error 0.2 > 0.05"]))
    assert not passed and "RANDOM rows" in text and "FAILED" in text
    dlg.reject()


def test_save_report_writes_the_selected_runs_html(qtbot, onnx_run, tmp_path):
    key, run_dir = onnx_run
    from slimline.gui.main_window import MainWindow

    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.variants.variant(key) is not None, timeout=10000)
    win.variants.select(key)
    assert win.act_report in win.menuBar().actions()[0].menu().actions()
    out = tmp_path / "report.html"
    done = []
    win.report_saved.connect(done.append)
    win.save_report(str(out))
    qtbot.waitUntil(lambda: bool(done) or win.banner.isVisible(), timeout=60000)
    assert done == [str(out)], win.banner.label.text()
    html = out.read_text()
    assert run_dir.name in html and "<script" not in html
