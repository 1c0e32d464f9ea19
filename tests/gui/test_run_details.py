"""Step cards with figures and flag reasons, the latency batch selector, preferences reaching runs."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _lat(p50_1: float, p50_64: float) -> dict:
    return {str(b): {"p50_ms": v, "p90_ms": v * 1.2, "batch": b, "runs": 50, "input_kind": "dataset"}
            for b, v in ((1, p50_1), (64, p50_64))}


ORIGINAL = {"step_id": "original", "title": "Original", "size": {"bytes_on_disk": 3_000_000},
            "latency": _lat(2.0, 40.0), "accuracy": {"dataset": "digits_eval.npz", "n": 449, "top1": 0.99}}
SLOW64 = {"step_id": "s1", "title": "Quantize", "size": {"bytes_on_disk": 750_000}, "latency": _lat(1.0, 48.0),
          "accuracy": {"dataset": "digits_eval.npz", "n": 449, "top1": 0.97},
          "flags": ["slower", "over_budget"],
          "warnings": ["slower at batch 64: p50 40.000 → 48.000 ms (1.20×)",
                       "top-1 0.9700 vs original 0.9900 on digits_eval.npz (n=449): drop 2.00 points > budget 1.00"]}


def test_step_card_shows_figures_against_original_and_flag_reasons(qtbot, as_result):
    from slimline.core.pipeline import StepSpec
    from slimline.gui.step_lane import StepCard

    card = StepCard(StepSpec(id="s1", plugin="builtin.quantize_static"), 0, "Quantize")
    qtbot.addWidget(card)
    card.set_result(as_result(SLOW64), as_result(ORIGINAL))
    text = card.status_label.text()
    assert "0.75 MB" in text and "0.25×" in text          # size and its ratio to the original
    assert "p50 b1" in text and "0.50×" in text            # batch-1 latency ratio
    assert "0.9700" in text and "-2.00 pt" in text         # top-1 and the drop in points
    assert card.flags_label.isVisibleTo(card)
    assert "slower" in card.flags_label.text() and "over budget" in card.flags_label.text()
    tip = card.flags_label.toolTip()
    assert "batch 64" in tip and "drop 2.00 points" in tip  # the reason, not just the flag
    assert "batch 64: p50 48.0 ms, p90 57.6 ms (1.20×" in card.status_label.toolTip()


def test_card_keeps_its_figures_when_the_pipeline_is_edited(qtbot, test_plugins, as_result):
    from slimline.gui.pipeline_editor import PipelineEditor

    ed = PipelineEditor()
    qtbot.addWidget(ed)
    sid = ed.doc.add_step("test.noop")
    ed.set_step_result(sid, as_result({**SLOW64, "step_id": sid}), as_result(ORIGINAL))
    ed.doc.add_step("test.noop")           # the lane is rebuilt from the document
    assert "0.25×" in ed.lane.cards[sid].status_label.text()


def test_latency_chart_batch_selector_and_flags_for_other_batches(qtbot, as_result):
    from slimline.gui.step_charts import StepCharts

    charts = StepCharts()
    qtbot.addWidget(charts)
    for r in (ORIGINAL, SLOW64):
        charts.add_result(as_result(r))
    charts.flush()
    assert charts.batch_combo.isVisibleTo(charts) and charts.batches() == [1, 64]
    shown = [t.textItem.toPlainText() for t in charts.lat_chart.texts if t.isVisible()]
    assert shown == ["⚑ slower at batch 64"]                # at batch 1 the flag concerns the other batch
    assert "batch 1" in charts.lat_plot.plotItem.titleLabel.text
    charts.set_batch(64)
    shown = [t.textItem.toPlainText() for t in charts.lat_chart.texts if t.isVisible()]
    assert shown == ["⚑ slower"]
    assert "batch 64" in charts.lat_plot.plotItem.titleLabel.text
    y = list(charts.lat_chart.points.data["y"])
    assert y == [40.0, 48.0]


def test_single_batch_run_has_no_selector(qtbot, as_result):
    from slimline.gui.step_charts import StepCharts

    charts = StepCharts()
    qtbot.addWidget(charts)
    one = {**ORIGINAL, "latency": {"1": ORIGINAL["latency"]["1"]}}
    charts.add_result(as_result(one))
    charts.flush()
    assert not charts.batch_combo.isVisibleTo(charts)
    assert charts.series_points["latency"] == 1


def test_loss_curve_redraws_on_a_timer_not_per_event(qtbot):
    from slimline.core.results import MetricEvent
    from slimline.gui.step_charts import StepCharts

    charts = StepCharts()
    qtbot.addWidget(charts)
    for i in range(500):
        charts.add_metrics([MetricEvent(step_id="s2", kind="loss", payload={"epoch": 0, "batch": i, "batches": 500,
                                                                            "value": 1.0 / (i + 1)})])
    assert charts.loss_point_count() == 500
    assert charts._loss_timer.isActive() and not charts._loss_items   # nothing drawn yet: one redraw later
    qtbot.waitUntil(lambda: bool(charts._loss_items), timeout=2000)
    (curve,) = charts._loss_items.values()
    assert len(curve.xData) == 500


def test_preferred_device_goes_into_the_run_only_when_chosen(window):
    assert window.prefs.device == ""
    window.doc.pipeline.evaluation.device = "cpu"
    assert window.run_spec_pipeline().evaluation.device == "cpu"
    window.prefs.device = "cuda"
    assert window.run_spec_pipeline().evaluation.device == "cuda"
    assert window.doc.pipeline.evaluation.device == "cpu"   # the document itself is not edited


def test_preferences_dialog_saves_device_threads_and_data(window, qtbot, tmp_path):
    from slimline.gui import settings as st
    from slimline.gui.dialogs import PreferencesDialog

    dlg = PreferencesDialog(window.prefs, window)
    qtbot.addWidget(dlg)
    dlg.threads.setValue(3)
    dlg.device.setCurrentIndex(dlg.device.findData("cpu"))
    dlg.data.setText(str(tmp_path / "eval.npz"))
    dlg.accept()
    again = st.Preferences.load()
    assert (again.threads, again.device, again.default_data) == (3, "cpu", str(tmp_path / "eval.npz"))


def test_default_data_is_loaded_for_a_model_opened_without_data(window, qtbot, tiny_model):
    model, data = tiny_model
    window.prefs.default_data = str(data)
    with qtbot.waitSignal(window.data_loaded, timeout=30000) as sig:
        window.open_model(str(model))
    assert sig.args[0] == str(data)
    assert "n=64" in window.data_label.text()


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="POSIX priorities")
def test_run_passes_threads_and_lowers_the_worker_priority(window, qtbot, tiny_model):
    """A real run from the window: the real worker process is nicer than the app (nothing mocked)."""
    from slimline.gui.run_controller import WORKER_NICE

    model, data = tiny_model
    with qtbot.waitSignal(window.model_opened, timeout=30000):
        window.open_model(str(model))
    with qtbot.waitSignal(window.data_loaded, timeout=30000):
        window.open_data(str(data))
    window.doc.add_step("builtin.prune_magnitude")
    window.prefs.threads, window.prefs.device = 2, "cpu"
    seen: dict = {}

    def on_started(_run_id: str) -> None:  # the job just spawned: read the child's real priority now
        job = window.controller.job
        seen["pid"], seen["threads"] = job.pid, job.spec["threads"]
        seen["device"] = job.spec["pipeline"]["evaluation"]["device"]
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, job.pid)
        task_dir = f"/proc/{job.pid}/task"
        if os.path.isdir(task_dir):
            seen["thread_nice"] = {os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir(task_dir)}

    window.controller.started.connect(on_started)
    with qtbot.waitSignal(window.controller.started, timeout=60000):
        window.run_pipeline()
    window.controller.cancel()
    qtbot.waitUntil(lambda: not window.controller.running, timeout=30000)
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert seen["pid"] != os.getpid()
    assert seen["threads"] == 2 and seen["device"] == "cpu"
    assert seen["nice"] == min(19, own + WORKER_NICE), (seen, own)
    if own < 19:
        assert seen["nice"] > own
    for nice in seen.get("thread_nice", ()):
        assert nice == min(19, own + WORKER_NICE), seen


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="POSIX priorities")
def test_lower_priority_makes_a_process_nicer():
    from slimline.gui.run_controller import lower_priority

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        before = os.getpriority(os.PRIO_PROCESS, child.pid)
        assert lower_priority(child.pid, 5)
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, before + 5)
    finally:
        child.kill()
        child.wait()


def test_loss_chart_only_for_pipelines_that_train(qtbot):
    from slimline.core.pipeline import StepSpec
    from slimline.gui.pipeline_doc import trains
    from slimline.gui.step_charts import StepCharts

    charts = StepCharts()
    qtbot.addWidget(charts)
    charts.show()
    quantize = [StepSpec(id="s1", plugin="builtin.quantize_weight_only")]
    distill = quantize + [StepSpec(id="s2", plugin="builtin.distill")]
    assert not trains(quantize) and trains(distill)
    assert not trains([distill[1].model_copy(update={"enabled": False})])
    charts.show_training(trains(quantize))
    assert not charts.loss_plot.isVisible()
    qtbot.waitUntil(lambda: charts.acc_plot.width() > charts.size_plot.width() * 1.5, timeout=2000)  # full row
    charts.show_training(trains(distill))
    assert charts.loss_plot.isVisible()
