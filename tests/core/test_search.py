"""Budgeted search on the small MLP with a planted sensitive layer, and the greedy path itself."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from layered_models import OUTLIER_LAYER, save_mlp

from slimline.core.data import DataBundle
from slimline.core.history import load_run, run_dir
from slimline.core.models import open_model
from slimline.core.pipeline import Budgets, Evaluation
from slimline.core.search.models import SEARCH_FILE, SearchResult, SearchSettings
from slimline.core.search.path import Move, greedy_path, settings_after
from slimline.core.search.run import search
from slimline.core.sensitivity.protocol import Level


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, DataBundle, Path]:
    folder = tmp_path_factory.mktemp("mlp")
    handle, data = save_mlp(folder)
    model = open_model(handle.path)
    return model, DataBundle.from_paths(eval=data, model=model), folder


def test_quantize_search_excludes_the_sensitive_layer_and_records_every_candidate(mlp, tmp_path: Path) -> None:
    model, data, _ = mlp
    res = search(model, data, SearchSettings(step="quantize_dynamic", params={"per_channel": False}, threads=1,
                                             latency_runs=3), workspace=tmp_path)
    assert res.reachable and res.verdict.startswith("budget met")
    chosen = res.candidate(res.chosen)
    assert chosen is not None and chosen.within_budget and chosen.chosen
    assert OUTLIER_LAYER not in chosen.settings and len(chosen.settings) >= 2   # the others quantized
    assert OUTLIER_LAYER in chosen.params["nodes_to_exclude"]
    uniform = [c for c in res.candidates if c.kind == "uniform"]
    assert len(uniform) == 1 and not uniform[0].within_budget      # every layer INT8 breaks the budget
    assert res.best_uniform is None and "no uniform preset meets the budget" in res.verdict
    within = [c for c in res.candidates if c.within_budget]
    assert chosen.objective == min(c.objective for c in within)
    assert chosen.bytes_on_disk < Path(model.path).stat().st_size
    # every candidate is a variant of one run record; the chosen one is its final model
    record = load_run(run_dir(tmp_path, res.run_id))
    assert record.status == "done" and [r.step_id for r in record.results] == \
        ["original"] + [c.step_id for c in res.candidates]
    mine = record.step(chosen.step_id)
    assert mine is not None and mine.metrics["search_chosen"] == 1.0 and record.final_model == mine.model
    assert {s["layer"] for s in (mine.tables or {})["settings"]} == set(chosen.settings)
    assert record.pipeline["steps"][-1]["params"]["nodes_to_exclude"] == chosen.params["nodes_to_exclude"]
    saved = SearchResult.model_validate(json.loads((run_dir(tmp_path, res.run_id) / SEARCH_FILE).read_text()))
    assert saved.chosen == res.chosen and saved.sensitivity is not None and saved.sensitivity.rows[0].layer == \
        OUTLIER_LAYER
    # `slimline report RUN` shows the verdict, the path (chosen marked) and the ranking it started from
    from slimline.core.cli import run

    assert run(["report", str(run_dir(tmp_path, res.run_id)), "--no-stats", "--out", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "<h2>Budgeted search</h2>" in html and res.verdict.split(" — ")[0] in html and "★ chosen" in html
    assert "<h2>Sensitivity ranking: Quantize: dynamic INT8</h2>" in html and "<code>fc2</code>" in html
    assert html.index("<h2>Budgeted search</h2>") < html.index("<h2>Sensitivity ranking")


@pytest.fixture(scope="module")
def shared_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One workspace for the prune searches: the second reuses the first's ranking and built candidates."""
    return tmp_path_factory.mktemp("ws")


def test_prune_search_beats_the_uniform_preset_within_the_same_budget(mlp, shared_ws: Path) -> None:
    model, data, _ = mlp
    tmp_path = shared_ws
    ev = Evaluation(budgets=Budgets(max_accuracy_drop=0.05))
    res = search(model, data, SearchSettings(step="prune", levels=["0.3", "0.5"], threads=1, max_candidates=10,
                                             latency_runs=3), workspace=tmp_path, evaluation=ev)
    assert res.objective == "compressed" and res.reachable
    chosen, uniform = res.candidate(res.chosen), res.candidate(res.best_uniform)
    assert chosen is not None and chosen.within_budget and chosen.metric.loss <= 0.05 + 1e-9
    if uniform is not None:
        assert chosen.objective <= uniform.objective
    levels = {lv for c in res.candidates for lv in c.settings.values()}
    assert len(levels) > 1 or len(res.candidates) < 3   # per-layer sparsities, not one for all


def test_an_unreachable_budget_is_said_so(mlp, tmp_path: Path) -> None:
    model, data, folder = mlp
    x = np.load(folder / "eval.npz")["x"]
    np.savez(tmp_path / "unlabelled.npz", x=x)   # no labels: the classification budget is the output cosine
    bundle = DataBundle.from_paths(eval=tmp_path / "unlabelled.npz", model=model)
    ev = Evaluation(budgets=Budgets(min_cosine=1.0))
    res = search(model, bundle, SearchSettings(step="quantize_dynamic", threads=1, max_candidates=4, latency_runs=3),
                 workspace=tmp_path, evaluation=ev)
    assert not res.reachable and res.chosen is None
    assert res.verdict.startswith("budget unreachable") and "mean output cosine ≥ 1.0" in res.verdict
    record = load_run(run_dir(tmp_path, res.run_id))
    assert record.final_model is None and record.status == "done" and len(record.results) > 1


def test_greedy_path_takes_the_least_damage_per_byte_and_climbs_levels_in_order() -> None:
    levels = [Level("0.5", "50 %", 0.5), Level("0.9", "90 %", 0.9)]
    damage = {("a", "0.5"): 0.01, ("a", "0.9"): 0.02, ("b", "0.5"): 0.5, ("b", "0.9"): 5.0}
    saved = {("a", "0.5"): 100.0, ("a", "0.9"): 180.0, ("b", "0.5"): 100.0, ("b", "0.9"): 180.0}
    moves = greedy_path(["a", "b"], levels, damage, lambda ly, lv: saved[(ly, lv)])
    assert [(m.layer, m.level) for m in moves] == [("a", "0.5"), ("a", "0.9"), ("b", "0.5"), ("b", "0.9")]
    assert moves[1].saved == pytest.approx(80.0) and moves[1].damage == pytest.approx(0.01)
    assert settings_after(moves, 3) == {"a": "0.9", "b": "0.5"}
    # skipping a move blocks that layer's later levels but not the others'
    assert settings_after(moves, 4, frozenset({2})) == {"a": "0.9"}
    assert settings_after([Move("a", "0.5", 0, 1), Move("b", "0.5", 0, 1)], 2, frozenset({0})) == {"b": "0.5"}


def test_a_cancelled_search_keeps_the_candidates_it_verified(mlp, tmp_path: Path) -> None:
    from slimline.core.errors import Cancelled
    from slimline.core.history import list_runs
    from slimline.core.plugin import CancelToken

    model, data, _ = mlp
    token = CancelToken()
    with pytest.raises(Cancelled):
        search(model, data, SearchSettings(step="quantize_dynamic", threads=1, top_k=0), workspace=tmp_path,
               cancel=token, on_candidate=lambda c: token.cancel())
    (record,) = list_runs(tmp_path)
    assert record.status == "cancelled" and [r.step_id for r in record.results] == ["original", "c01"]
    assert not [p for p in (tmp_path / "sensitivity").iterdir() if p.name.startswith(".work")]


def test_a_latency_search_chooses_by_an_interleaved_retiming(mlp, shared_ws: Path) -> None:
    model, data, _ = mlp
    tmp_path = shared_ws
    res = search(model, data, SearchSettings(step="prune", objective="latency", levels=["0.3", "0.5"], threads=1,
                                             max_candidates=10, latency_runs=3), workspace=tmp_path,
                 evaluation=Evaluation(budgets=Budgets(max_accuracy_drop=0.05)))
    within = [c for c in res.candidates if c.within_budget]
    assert len(within) >= 2, [(c.label, c.metric.value) for c in res.candidates]
    assert res.notes[0].startswith("latency: candidates") and "interleaved" in res.notes[0]
    chosen = res.candidate(res.chosen)
    assert chosen is not None and chosen.latency_p50_ms == chosen.objective
