"""Each view on its own: layer table, histograms, overview, forms, run controller, summary."""
from __future__ import annotations

import enum
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from pydantic import Field
from PySide6.QtCore import Qt

from slimline.core.plugin import PluginParams


def rows():
    from slimline.gui.layer_table import _demo_rows

    r = _demo_rows()
    r[5]["params"] = 10_000
    r[9]["outlier_frac"] = 0.01
    return r


def test_layer_table_sort_filter_highlight(qtbot):
    from slimline.gui.layer_table import SORT_ROLE, LayerTableView

    v = LayerTableView()
    qtbot.addWidget(v)
    v.set_rows(rows())
    assert v.proxy.rowCount() == 12
    v.table.sortByColumn(5, Qt.SortOrder.DescendingOrder)  # Params, numerically
    assert v.proxy.index(0, 0).data() == "layer5.weight"
    v.filter_edit.setText("LAYER1")
    assert {v.proxy.index(i, 0).data() for i in range(v.proxy.rowCount())} == {"layer1.weight", "layer10.weight",
                                                                               "layer11.weight"}
    v.filter_edit.clear()
    v.type_combo.setCurrentIndex(v.type_combo.findData("Conv2d"))
    assert v.proxy.rowCount() == 6
    v.type_combo.setCurrentIndex(0)
    v.unusual_combo.setCurrentIndex(1)
    unusual = {v.proxy.index(i, 0).data() for i in range(v.proxy.rowCount())}
    assert unusual == {"layer3.weight", "layer7.weight", "layer9.weight"}  # sparse, NaN, outliers
    m = v.model
    nan_row = m.index(m.row_of("layer7.weight"), 0)
    assert "NaN" in m.data(nan_row, Qt.ItemDataRole.ToolTipRole)
    assert m.data(nan_row, Qt.ItemDataRole.BackgroundRole) is not None
    assert m.data(m.index(m.row_of("layer0.weight"), 0), Qt.ItemDataRole.BackgroundRole) is None
    assert "3 unusual" in v.count_label.text()
    assert m.data(m.index(0, 5), SORT_ROLE) == 128


def test_histogram_overlay_log_and_sampled_label(qtbot):
    from slimline.gui.histogram_view import HistogramView, HistSeries

    v = HistogramView()
    qtbot.addWidget(v)
    counts, edges = np.histogram(np.random.default_rng(0).normal(size=1000), bins=32)
    v.add_series(HistSeries("a", edges, counts, sampled=True, n=1000))
    v.add_series(HistSeries("b", edges, counts, sampled=False, n=1000))
    v.add_series(HistSeries("a", edges, counts, sampled=False, n=1000, role="after"))
    assert v.plotted_item_count() == 3
    assert "sampled" in v.caption.text() and "exact" in v.caption.text()
    assert v.series[0].legend == "a (sampled)" and v.series[2].legend == "a — after"
    v.log_check.setChecked(True)
    assert v.plot.getPlotItem().ctrl.logYCheck.isChecked()
    assert v.plotted_item_count() == 3


def test_overview_click_selects_layer_in_inspector(qtbot):
    from slimline.core.demo import demo_paths
    from slimline.core.models import open_model
    from slimline.gui.inspector import InspectorView

    v = InspectorView()
    qtbot.addWidget(v)
    with qtbot.waitSignal(v.stats_ready, timeout=30000):
        v.set_handle(open_model(demo_paths()["torch"]))
    names = v.layers.model.names()
    assert names[:2] == ["0.weight", "1.bias"]
    assert names.index("2.weight" if "2.weight" in names else names[2]) < names.index("11.weight")
    v.overview.click_index(3)
    assert v.layers.selected_names() == [names[3]]
    with qtbot.waitSignal(v.histograms_updated, timeout=20000):
        v.layers.select_name("16.weight")
    assert [s.label for s in v.histogram.series] == ["16.weight"]


class Mode(enum.Enum):
    fast = "fast"
    slow = "slow"


class FormParams(PluginParams):
    ratio: float = Field(0.5, gt=0, lt=1, description="ratio")
    limit: int | None = Field(None, ge=1, description="optional limit")
    mode: Mode = Field(Mode.fast, description="enum class")
    bits: Literal[4, 8] = 8
    calib: str = Field("", description="a file", json_schema_extra={"ui": "path"})
    out: Path = Path("x")


def test_param_form_widgets_from_schema(qtbot):
    from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QLineEdit

    from slimline.gui.param_form import ParamForm

    form = ParamForm(FormParams, {})
    qtbot.addWidget(form)
    kinds = {f.name: f.kind for f in form.fields}
    assert kinds == {"ratio": "float", "limit": "int", "mode": "enum", "bits": "enum", "calib": "path", "out": "path"}
    assert isinstance(form.editors["ratio"], QDoubleSpinBox)
    assert isinstance(form.editors["mode"], QComboBox) and form.editors["mode"].count() == 2
    assert form.editors["bits"].currentData() == 8
    got = []
    form.params_edited.connect(lambda p, f: got.append((f, p)))
    limit = form.editors["limit"]
    assert isinstance(limit, QLineEdit)
    limit.setText("0")
    assert not form.is_valid and "limit" in form.field_errors() and got == []
    limit.setText("5")
    assert form.is_valid and got[-1][1]["limit"] == 5
    limit.setText("")
    assert got[-1][1]["limit"] is None
    form.findChild(QLineEdit, "edit_calib").setText("/tmp/data.npz")
    assert got[-1] == ("calib", {**got[-1][1], "calib": "/tmp/data.npz"})
    form.editors["mode"].setCurrentIndex(1)
    assert got[-1][1]["mode"] == "slow"


class FakeJob:
    """Stands in for slimline.core.jobs.Job: a scripted event stream."""

    def __init__(self, events):
        self.events = list(events)
        self.run_id = "fake"
        self.cancelled = False

    def poll(self, timeout=0, max_events=200):
        out, self.events = self.events[:max_events], self.events[max_events:]
        return out

    def cancel(self):
        self.cancelled = True

    @property
    def alive(self):
        return bool(self.events)


def test_run_controller_coalesces_floods(qtbot, as_result):
    from slimline.core.results import DoneEvent, MetricEvent, ProgressEvent, RunSummary, StepResultEvent
    from slimline.gui.run_controller import MAX_HEAVY_PER_TICK, RunController

    c = RunController()
    results = [StepResultEvent(result=as_result({"step_id": f"s{i}"})) for i in range(6)]
    loss = [MetricEvent(step_id="s1", kind="loss", payload={"step": i, "value": 1.0}) for i in range(3000)]
    prog = [ProgressEvent(overall=i / 100, step_id="s1", fraction=i / 100, message="m") for i in range(100)]
    c.job = FakeJob(prog + loss + results + [DoneEvent(run=RunSummary(run_id="fake", status="done"))])
    metrics, progress, res, done = [], [], [], []
    c.metrics_received.connect(metrics.append)
    c.progress_changed.connect(lambda *a: progress.append(a))
    c.step_result_received.connect(res.append)
    c.finished.connect(lambda s, e: done.append(s))
    RunController._read_events(c.job, c._buffer)  # what the reader thread does
    assert len(c._buffer) == 3107
    c._on_timer_timeout()
    assert len(progress) == 1 and progress[0][0] == pytest.approx(0.99)  # only the latest progress is drawn
    assert sum(len(m) for m in metrics) == 3000 and len(metrics) <= 2     # one batch, not 3000 redraws
    assert 1 <= len(res) <= MAX_HEAVY_PER_TICK and not done  # redraw-heavy events are spread over ticks
    for _ in range(6):
        if done:
            break
        c._on_timer_timeout()
    assert [r.step_id for r in res] == [f"s{i}" for i in range(6)] and done == ["done"] and c.job is None


def test_summary_dims_are_editable(qtbot):
    from slimline.core.handle import ModelHandle, TensorSpec
    from slimline.gui.summary_view import SummaryView

    v = SummaryView()
    qtbot.addWidget(v)
    v.set_handle(ModelHandle(path="/tmp/x.onnx", format="onnx", family="onnx", producer="pytorch", opset=18,
                             inputs=[TensorSpec(name="ids", dtype="int64", shape=["batch", "seq"])],
                             dim_defaults={"batch": 1, "seq": 128}))
    assert set(v.dim_spins) == {"batch", "seq"} and v.dim_spins["seq"].value() == 128
    with qtbot.waitSignal(v.dims_changed) as sig:
        v.dim_spins["seq"].setValue(64)
    assert sig.args[0] == {"batch": 1, "seq": 64}
    assert v.fields["opset"].text() == "18" and v.io_table.rowCount() == 1


def test_export_dialog_without_or_with_engine(qtbot, as_result):
    from slimline.core.export.variants import variants_of
    from slimline.core.results import RunRecord
    from slimline.gui.export_dialog import ExportDialog, export_engine

    run = RunRecord(run_id="r", status="done", results=[as_result({"step_id": sid}) for sid in ("original", "s1")])
    vs = variants_of(run)
    dlg = ExportDialog(vs, "r/s1")
    qtbot.addWidget(dlg)
    assert dlg.selected_variant().key == "r/s1"
    mod, why = export_engine()
    if mod is None:
        assert "not available" in dlg.status.text() and not dlg.export_button.isEnabled()
    else:
        assert dlg.format_combo.count() >= 1
