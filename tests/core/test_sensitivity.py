"""Per-layer sensitivity on a small MLP with a planted sensitive layer (tests/core/layered_models.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from layered_models import OUTLIER_LAYER, save_mlp, weights

from slimline.core.data import DataBundle
from slimline.core.errors import Cancelled
from slimline.core.models import open_model
from slimline.core.plugin import CancelToken
from slimline.core.sensitivity.analyze import analyze
from slimline.core.sensitivity.models import SensitivitySettings


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, DataBundle]:
    handle, data = save_mlp(tmp_path_factory.mktemp("mlp"))
    model = open_model(handle.path)
    return model, DataBundle.from_paths(eval=data, model=model)


def _quantize(**kw: object) -> SensitivitySettings:
    base = {"step": "quantize_dynamic", "params": {"per_channel": False}, "modes": ["alone", "all_but"],
            "top_k": -1, "threads": 1}
    return SensitivitySettings.model_validate({**base, **kw})


def test_quantize_ranking_finds_the_planted_layer_by_the_end_metric(mlp, tmp_path: Path) -> None:
    model, data = mlp
    r = analyze(model, data, _quantize(), workspace=tmp_path)
    top = r.rows[0]
    assert (top.layer, top.tensor, top.source, top.rank) == (OUTLIER_LAYER, "fc2.weight", "end_metric", 1)
    assert r.task == "classification" and r.metric == "top-1 on eval.npz (n=96)" and r.baseline == 1.0
    lv = top.level("int8")
    assert lv is not None and lv.alone is not None and lv.all_but is not None and r.uniform is not None
    assert lv.alone.loss > 0.1 and not lv.alone.within_budget      # this layer alone breaks the 1-point budget
    assert r.uniform.loss > 0.1 and lv.all_but.loss < r.uniform.loss / 3   # leaving it in float recovers most
    assert top.score == pytest.approx(r.uniform.loss - lv.all_but.loss)
    scores = [row.score for row in r.rows]
    assert scores == sorted(scores, reverse=True)
    # the cheap scores rank it first too: its output error dwarfs the others'
    cheap = {row.layer: row.level("int8").output_error for row in r.rows}
    assert max(cheap, key=lambda k: cheap[k] or 0) == OUTLIER_LAYER


def test_cheap_scores_first_then_the_end_metric_for_the_top_k(mlp, tmp_path: Path) -> None:
    model, data = mlp
    r = analyze(model, data, _quantize(top_k=1), workspace=tmp_path)
    assert [row.source for row in r.rows] == ["end_metric", "output_error", "output_error", "output_error"]
    assert r.rows[0].layer == OUTLIER_LAYER and "top 1 by cheap score" in r.ranked_by
    assert all(lv.alone is None for row in r.rows[1:] for lv in row.levels)
    cheap_only = analyze(model, data, _quantize(top_k=0), workspace=tmp_path)
    assert {row.source for row in cheap_only.rows} == {"output_error"} and cheap_only.uniform is None
    assert cheap_only.ranked_by.startswith("cheap scores only")


def test_weight_error_is_the_pruned_share_of_the_weight(mlp, tmp_path: Path) -> None:
    model, data = mlp
    r = analyze(model, data, SensitivitySettings(step="prune", levels=["0.5", "0.9"], top_k=-1, threads=1),
                workspace=tmp_path)
    assert r.default_level == "0.5" and {lv.level for row in r.rows for lv in row.levels} == {"0.5", "0.9"}
    w = weights()[2]
    kept = np.sort(np.abs(w).ravel())
    expected = np.sqrt((kept[: kept.size // 2] ** 2).sum() / (kept ** 2).sum())
    fc3 = next(row for row in r.rows if row.layer == "fc3")
    assert fc3.level("0.5").weight_error == pytest.approx(expected, rel=1e-5)
    for row in r.rows:   # more zeros, more damage, for every layer, measured end to end
        a, b = row.level("0.5").alone, row.level("0.9").alone
        assert a is not None and b is not None and b.fidelity_loss > a.fidelity_loss
        assert row.score == pytest.approx(a.loss)


def test_results_are_cached_by_content(mlp, tmp_path: Path) -> None:
    model, data = mlp
    first = analyze(model, data, _quantize(top_k=1), workspace=tmp_path)
    again = analyze(model, data, _quantize(top_k=1), workspace=tmp_path)
    assert again.cached and not first.cached and again.rows == first.rows and again.cache_key == first.cache_key
    other = analyze(model, data, _quantize(top_k=0), workspace=tmp_path)
    assert not other.cached and other.cache_key != first.cache_key
    fewer = DataBundle(eval=data.eval.take(50))
    assert not analyze(model, fewer, _quantize(top_k=0), workspace=tmp_path).cached
    assert (tmp_path / "sensitivity" / f"{first.cache_key}.json").is_file()


def test_cancel_stops_between_probes_and_stores_nothing(mlp, tmp_path: Path) -> None:
    model, data = mlp
    token = CancelToken()
    rows: list[object] = []

    def on_row(row: object) -> None:
        rows.append(row)
        token.cancel()

    with pytest.raises(Cancelled):
        analyze(model, data, _quantize(), workspace=tmp_path, cancel=token, on_row=on_row)
    assert len(rows) == 1
    assert not list((tmp_path / "sensitivity").glob("*.json"))
    assert not [p for p in (tmp_path / "sensitivity").iterdir() if p.name.startswith(".work")]


def test_without_data_the_ranking_says_random_inputs(mlp, tmp_path: Path) -> None:
    model, _ = mlp
    r = analyze(model, None, _quantize(top_k=0), workspace=tmp_path)
    assert r.input_kind == "random" and "RANDOM" in r.metric and any("RANDOM" in n for n in r.notes)


def test_metric_probe_uses_the_task_headline() -> None:
    from types import SimpleNamespace

    from slimline.core.sensitivity.metric import MetricProbe
    from slimline.core.tasks import TaskGuess

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((8, 5, 11)).astype(np.float32)
    ids = rng.integers(0, 11, size=(8, 5))
    ds = SimpleNamespace(inputs={"input_ids": ids, "attention_mask": np.ones_like(ids)}, labels=None, name="t")
    probe = MetricProbe(TaskGuess(task="token_logits", reason="test"), ref, ds)
    assert probe.name.startswith("perplexity increase") and not probe.higher_is_better
    same, worse = probe.score(ref), probe.score(ref + rng.standard_normal(ref.shape).astype(np.float32))
    assert same.loss == pytest.approx(0.0, abs=1e-9) and same.within_budget
    assert worse.loss > 0.05 and not worse.within_budget and "perplexity" in worse.reason
    emb = rng.standard_normal((6, 4, 8)).astype(np.float32)
    e = MetricProbe(TaskGuess(task="embedding", reason="t"), emb, SimpleNamespace(inputs={}, labels=None, name="s"))
    assert e.name.startswith("pooled cosine") and e.baseline == pytest.approx(1.0)
