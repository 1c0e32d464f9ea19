"""A language model in the window: its text as windows, perplexity / tokens/s / size per step, generations."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from tests.core import modelfiles as mf
from tests.lm.helpers import SMALL, run_inline


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import torch

    torch.set_num_threads(1)
    folder = mf.hf_llama(tmp_path_factory.mktemp("guilm") / "llama", train_steps=40)
    return folder, folder.parent / "llama-corpus.txt"


@pytest.fixture(scope="module")
def lm_run(lm: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    folder, text = lm
    return run_inline(folder, text, tmp_path_factory.mktemp("ws"),
                      [{"id": "s1", "plugin": "builtin.prune_magnitude", "params": {"sparsity": 0.3}}])


def _diverging(result, at: int = 2):  # noqa: ANN001, ANN202
    """The step's result with the first prompt's continuation changed from token ``at`` on."""
    gen = result.lm.generation
    s = gen.samples[0]
    changed = s.model_copy(update={"tokens": s.tokens[:at] + [7, 8], "text": "same part|changed part",
                                   "first_divergence": at, "common_text": "same part"})
    new_gen = gen.model_copy(update={"samples": [changed, *gen.samples[1:]]})
    return result.model_copy(update={"step_id": "s2", "lm": result.lm.model_copy(update={"generation": new_gen})})


def test_step_charts_show_perplexity_and_decode_tokens_per_s(qtbot, lm_run) -> None:  # noqa: ANN001
    from slimline.gui.step_charts import StepCharts

    charts = StepCharts()
    qtbot.addWidget(charts)
    for r in lm_run.results:
        charts.add_result(r)
    charts.flush()
    assert charts.series_points == {"size": 2, "latency": 2, "quality": 2}
    assert charts.acc_plot.plotItem.titleLabel.text.startswith("perplexity on llama-corpus.txt (n=192 tokens")
    assert "paired over the same windows" in charts.acc_plot.getAxis("bottom").labelText
    # the original is the baseline (no whisker); the step's whisker is its paired change interval
    vs = lm_run.results[1].lm.vs_original
    w = charts.acc_chart.whiskers.opts
    assert w["top"][0] == 0 and w["bottom"][0] == 0
    ppl = lm_run.results[1].lm.perplexity.value
    assert w["top"][1] == pytest.approx(vs.original_perplexity * (1 + vs.increase_high) - ppl)
    assert w["bottom"][1] == pytest.approx(ppl - vs.original_perplexity * (1 + vs.increase_low))
    assert "Decode tokens/s (median of 4 prompts" in charts.lat_plot.plotItem.titleLabel.text
    assert charts.task_label.text().startswith("task: token logits (language model); perplexity on llama-corpus")
    assert not charts.batch_combo.isVisible()


def test_generations_panel_highlights_the_first_divergence(qtbot, lm_run) -> None:  # noqa: ANN001
    from slimline.gui.generations_view import MARK_LIGHT, GenerationsView

    view = GenerationsView()
    qtbot.addWidget(view)
    assert view.isHidden()
    for r in [*lm_run.results, _diverging(lm_run.results[1])]:
        view.add_result(r)
    assert not view.isHidden() and view.marked_count() == 1
    html = view.browser.toHtml()
    assert "Prompt 4:" in html and "differs from token 2" in html and "same as the original" in html
    assert MARK_LIGHT.lstrip("#") in html.lower() and "changed part" in view.browser.toPlainText()
    assert "4 sentences of llama-corpus.txt" in view.title.text()
    view.clear()
    assert view.isHidden() and view.results == []


def test_results_table_shows_perplexity_and_tokens_per_s(qtbot, lm_run) -> None:  # noqa: ANN001
    from slimline.gui.variants_view import VariantsView

    v = VariantsView()
    qtbot.addWidget(v)
    v.set_runs([lm_run])
    m = v.model
    assert m.rowCount() == 2
    cells = [m.index(1, c).data() for c in range(m.columnCount())]
    assert cells[4].endswith("tok/s") and cells[5].startswith("prefill") and "." in cells[6]
    heads = [m.headerData(c, Qt.Orientation.Horizontal) for c in range(m.columnCount())]
    assert heads[4:7] == ["Decode", "Prefill", "Perplexity"]   # not "p50"/"p90" over tokens/s
    assert v.lat_plot.plotItem.titleLabel.text == "Decode time per token vs perplexity"
    assert v.pareto_keys  # lower perplexity, smaller size: the front is computed the right way round
    assert "perplexity on llama-corpus.txt" in v.size_plot.getAxis("left").labelText


def test_window_runs_an_lm_and_shows_its_figures(window, qtbot, lm, tmp_path) -> None:  # noqa: ANN001
    folder, text = lm
    with qtbot.waitSignal(window.model_opened, timeout=60000):
        window.open_model(str(folder))
    with qtbot.waitSignal(window.data_loaded, timeout=60000):
        window.open_data(str(text))
    assert "windows × 128 tokens" in window.session.data_info and "(language model text)" in window.session.data_info
    pipe = tmp_path / "pipe.json"
    pipe.write_text(json.dumps({"format": "slimline.pipeline", "schema_version": 1, "name": "lm",
                                "steps": [{"id": "s1", "plugin": "builtin.prune_magnitude",
                                           "params": {"sparsity": 0.3}}],
                                "evaluation": {"lm": SMALL, "latency": {"threads": 1}}}))
    window.open_pipeline(str(pipe))
    with qtbot.waitSignal(window.controller.finished, timeout=240000):
        window.run_pipeline()
    rv = window.run_view
    rv.charts.flush()
    assert rv.charts.series_points["quality"] == 2 and not rv.generations.isHidden()
    assert len(rv.generations.results) == 2


def test_lm_settings_form_recuts_the_text(window, qtbot, lm) -> None:  # noqa: ANN001
    """The data line never names other windows than the run will score: the form's edit re-cuts the text."""
    folder, text = lm
    with qtbot.waitSignal(window.model_opened, timeout=60000):
        window.open_model(str(folder))
    with qtbot.waitSignal(window.data_loaded, timeout=60000):
        window.open_data(str(text))
    qtbot.waitUntil(lambda: not window.editor.lm_box.isHidden(), timeout=5000)  # a causal LM: its settings show
    before = window.session.dataset.count
    assert before > 3
    form = window.editor.lm_form
    with qtbot.waitSignal(window.data_loaded, timeout=60000):
        form.editors["window_count"].setValue(3)
        form.editors["window_length"].setValue(32)
    ds = window.session.dataset
    assert (ds.count, ds.length) == (3, 32)
    assert window.session.data_info.startswith(ds.describe())


def test_run_table_shows_the_reports_cells(qtbot, lm_run) -> None:  # noqa: ANN001
    """Perplexity ± interval, Δ with its paired interval, agreement, KL ≥, tokens/s, size: the report's cells."""
    from slimline.core.lm import render as lr
    from slimline.gui.lm_table_view import LMRunTable

    view = LMRunTable()
    qtbot.addWidget(view)
    assert view.isHidden()
    for r in lm_run.results:
        view.add_result(r)
    assert not view.isHidden() and view.table.rowCount() == 2
    _, rows = lr.lm_rows(lm_run.results)
    for h in ("perplexity", "Δ ppl (95 % CI)", "agreement", "KL ≥", "decode tok/s", "size"):
        assert view.cell(1, h) == rows[1][lr.LM_HEADERS.index(h)], h
    assert "±" in view.cell(0, "perplexity") and "…" in view.cell(1, "Δ ppl (95 % CI)")
    assert "llama-corpus.txt" in view.footer.text() and "thread" in view.footer.text()   # dataset, n, threads
    view.clear()
    assert view.isHidden() and view.table.rowCount() == 0


def test_runs_of_a_gguf_group_under_the_gguf(lm_run) -> None:  # noqa: ANN001
    """A GGUF runs as its dequantized folder, but the window opened (and keys the Results tab by) the .gguf."""
    from slimline.gui.results import model_key, run_model

    model = lm_run.model.model_copy(update={"meta": {**lm_run.model.meta, "gguf_file": "/x/m.Q4_1.gguf"}})
    assert run_model(lm_run.model_copy(update={"model": model})) == (model_key("/x/m.Q4_1.gguf"), "m.Q4_1.gguf")


def test_report_speed_tile_is_marked_when_noisy_like_the_table(lm_run) -> None:  # noqa: ANN001
    """The table says 0.6? for a busy machine's speed; the report's headline ratio must not read as a clean 31×."""
    from slimline.core.lm.html import headline_tiles

    def with_noise(r, noise):  # noqa: ANN001, ANN202
        gen = r.lm.generation.model_copy(update={"noise": noise})
        return r.model_copy(update={"lm": r.lm.model_copy(update={"generation": gen})})

    a, b = lm_run.results
    quiet = dict((k, (v, sub)) for k, v, sub in headline_tiles([with_noise(a, []), with_noise(b, [])]))
    busy = dict((k, (v, sub)) for k, v, sub in headline_tiles([with_noise(a, ["machine busy"]), with_noise(b, [])]))
    assert not quiet["decode tokens/s"][0].endswith("?") and "NOISY" not in quiet["decode tokens/s"][1]
    assert busy["decode tokens/s"][0].endswith("×?") and "NOISY" in busy["decode tokens/s"][1]
    assert "thread" in quiet["decode tokens/s"][1]
