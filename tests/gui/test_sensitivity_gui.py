"""The Sensitivity panel and the Compare tab with the real engine: ranking, linked selection, click-to-exclude
with undo, cancel, and the before/after diff of two variants."""
from __future__ import annotations

import json
from pathlib import Path

from layered_models import OUTLIER_LAYER, save_mlp

import slimline.core.sensitivity.job  # noqa: F401  (a broken engine import must fail these tests, not skip them)


def open_mlp(window, qtbot, tmp_path: Path) -> tuple[Path, Path]:
    handle, data = save_mlp(tmp_path / "mlp")
    with qtbot.waitSignal(window.model_opened, timeout=30000):
        window.open_model(handle.path)
    with qtbot.waitSignal(window.data_loaded, timeout=30000):
        window.open_data(str(data))
    doc = {"format": "slimline.pipeline", "schema_version": 1, "name": "sensitivity test",
           "steps": [{"id": "s1", "plugin": "builtin.quantize_dynamic", "params": {"per_channel": False}}],
           "evaluation": {"data": str(data), "latency": {"batch_sizes": [1], "runs": 3, "warmup": 1, "threads": 1}}}
    (tmp_path / "pipe.json").write_text(json.dumps(doc))
    window.open_pipeline(str(tmp_path / "pipe.json"))
    return Path(handle.path), data


def test_ranking_links_to_the_table_and_click_excludes_undoably(window, qtbot, tmp_path: Path) -> None:
    open_mlp(window, qtbot, tmp_path)
    panel = window.inspector.sensitivity
    assert panel.step_key() == "s1" and panel.step_combo.count() >= 2   # the pipeline's step first, then kinds
    with qtbot.waitSignal(window.sensitivity.result_ready, timeout=120000) as sig:
        panel.analyze_button.click()
    result = sig.args[0]
    assert result.rows[0].layer == OUTLIER_LAYER and result.rows[0].source == "end_metric"
    chart = panel.chart
    assert [b.key for b in chart.bars][0] == "fc2.weight" and len(chart.bars) == 4
    # the layer table gained the ranking
    model = window.inspector.layers.model
    from PySide6.QtCore import Qt

    col = [c.key for c in __import__("slimline.gui.layer_table", fromlist=["COLUMNS"]).COLUMNS].index("sensitivity")
    assert model.data(model.index(model.row_of("fc2.weight"), col), Qt.ItemDataRole.DisplayRole).startswith("#1 ")
    # click a bar: that layer is selected in the table, and its histogram follows
    chart.click_bar(2)
    assert window.inspector.layers.selected_names() == [chart.bars[2].key]
    qtbot.waitUntil(lambda: any(s.label == chart.bars[2].key for s in window.inspector.histogram.series), timeout=10000)
    # selecting in the table highlights the bar
    window.inspector.layers.select_name("fc2.weight")
    assert chart.selected == "fc2.weight"
    # double-click excludes: the step's nodes_to_exclude, one undo step
    stack = window.doc.undo_stack
    before = stack.count()
    chart.click_bar(0, double=True)
    assert window.doc.step("s1").params["nodes_to_exclude"] == [OUTLIER_LAYER]
    assert stack.count() == before + 1 and "(excluded)" in chart.bars[0].label and chart.bars[0].kind == "excluded"
    panel.undo_button.click()
    assert window.doc.step("s1").params.get("nodes_to_exclude", []) == []
    assert "(excluded)" not in chart.bars[0].label
    stack.redo()
    assert window.doc.step("s1").params["nodes_to_exclude"] == [OUTLIER_LAYER]


def test_excluding_for_a_step_kind_the_pipeline_lacks_adds_the_step(window, qtbot, tmp_path: Path) -> None:
    open_mlp(window, qtbot, tmp_path)
    panel = window.inspector.sensitivity
    panel.select_step("+builtin.prune_magnitude")
    with qtbot.waitSignal(window.sensitivity.result_ready, timeout=120000):
        panel.analyze_button.click()
    steps = len(window.doc.steps)
    panel.chart.click_bar(0)
    panel.exclude_button.click()
    added = window.doc.steps[-1]
    assert len(window.doc.steps) == steps + 1 and added.plugin == "builtin.prune_magnitude"
    assert added.params["skip"] == [panel.result.rows[0].layer] and panel.step_key() == added.id
    window.doc.undo_stack.undo()
    assert len(window.doc.steps) == steps


def test_cancel_stops_the_analysis(window, qtbot, tmp_path: Path) -> None:
    open_mlp(window, qtbot, tmp_path)
    panel = window.inspector.sensitivity
    runner = window.sensitivity.runner
    with qtbot.waitSignal(runner.cancelled, timeout=60000):
        panel.analyze_button.click()
        qtbot.waitUntil(lambda: panel.cancel_button.isEnabled(), timeout=5000)
        panel.cancel_button.click()
    assert not runner.running and panel.analyze_button.isEnabled() and panel.status.text() == "Cancelled."


def test_compare_two_variants_sorted_and_linked_to_histograms(window, qtbot, tmp_path: Path) -> None:
    model, data = open_mlp(window, qtbot, tmp_path)
    from slimline.core.data import DataBundle
    from slimline.core.models import open_model
    from slimline.core.search.models import SearchSettings
    from slimline.core.search.run import search

    handle = open_model(str(model))
    res = search(handle, DataBundle.from_paths(eval=data, model=handle),
                 SearchSettings(step="quantize_dynamic", params={"per_channel": False}, threads=1, latency_runs=3,
                                max_candidates=4), workspace=window.prefs.workspace_path(),
                 data_paths=(str(data), None))
    with qtbot.waitSignal(window.session.runs_changed, timeout=30000):
        window.ctl.load_history()
    view = window.diff_view
    uniform = next(c for c in res.candidates if c.kind == "uniform")
    view.choose(f"{res.run_id}/original", f"{res.run_id}/{uniform.step_id}")
    with qtbot.waitSignal(view.diff_ready, timeout=120000) as sig:
        view.compare()
    diff = sig.args[0]
    assert diff.dataset and diff.n > 0
    errors = [r.output_error for r in diff.rows]
    assert errors == sorted(errors, reverse=True) and diff.rows[0].tensor == "fc2.weight"
    assert all(r.status == "changed" and r.other.endswith("_quantized") for r in diff.rows)
    assert view.chart.bars[0].key == "fc2.weight"
    qtbot.waitUntil(lambda: {s.role for s in view.histogram.series} == {"before", "after"}, timeout=20000)
    view.chart.click_bar(1)
    assert view.model.rows[view.proxy.mapToSource(view.table.currentIndex()).row()].tensor == view.chart.bars[1].key
    qtbot.waitUntil(lambda: {(s.label, s.role) for s in view.histogram.series} ==
                    {(view.chart.bars[1].key, "before"), (view.chart.bars[1].key, "after")}, timeout=20000)
    # the chosen search candidate is marked in the Results tab
    chosen = res.candidate(res.chosen)
    assert chosen is not None
    row = next(i for i, v in enumerate(window.variants.variants) if v.step_id == chosen.step_id
               and v.run_id == res.run_id)
    assert "chosen" in window.variants.model.data(window.variants.model.index(row, 8))
