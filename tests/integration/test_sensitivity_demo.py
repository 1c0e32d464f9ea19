"""Sensitivity of the bundled demo CNN to magnitude pruning, on its real held-out digits.

With every layer at 70 % zeros top-1 collapses; leaving the ranking's top-k layers dense recovers it step by
step, and far sooner than the reversed order or random orders: the check that the ranking carries
information (a random ranking fails it).
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest

LEVEL, KS = "0.7", [1, 2, 3]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    from slimline.core.data import DataBundle
    from slimline.core.demo import demo_paths
    from slimline.core.models import open_model
    from slimline.core.sensitivity.analyze import analyze
    from slimline.core.sensitivity.models import SensitivitySettings
    from slimline.core.sensitivity.prepare import prepare

    tmp = tmp_path_factory.mktemp("demo")
    p = demo_paths()
    model = open_model(p["torch"])
    data = DataBundle.from_paths(eval=p["eval"], train=p["train"], model=model)
    result = analyze(model, data, SensitivitySettings(step="prune", levels=[LEVEL], modes=["all_but"], top_k=-1,
                                                      threads=1), workspace=tmp)
    prep = prepare(model, data, "prune", {}, workspace=tmp, threads=1)
    lw = prep.layerwise()
    yield result, prep, lw
    lw.close()
    prep.close()


@pytest.mark.timeout(600)
def test_demo_ranking_recovers_top1_monotonically_and_beats_other_orders(demo) -> None:
    from slimline.core.sensitivity.recovery import area, exclusion_curve

    result, prep, lw = demo
    assert result.task == "classification" and result.metric.startswith("top-1 on digits_eval.npz")
    assert [r.source for r in result.rows] == ["end_metric"] * len(result.rows) == ["end_metric"] * 6
    assert result.uniform is not None and result.uniform.loss > 0.2        # 70 % zeros everywhere breaks it
    order = result.ranked_layers()
    ranked = exclusion_curve(prep, lw, order, LEVEL, KS)
    losses = [result.uniform.loss] + [m.loss for m in ranked]
    assert all(b <= a + 1 / result.n for a, b in zip(losses, losses[1:])), losses   # monotone (± one row)
    assert ranked[-1].loss < 0.02, losses                                            # three layers dense: ~back
    others = {"reversed": order[::-1]}
    rng = random.Random(0)
    for i in range(2):
        shuffled = order[:]
        while shuffled[:1] == order[:1]:   # a "random" order that starts like the ranking proves nothing
            rng.shuffle(shuffled)
        others[f"random{i}"] = shuffled
    for name, o in others.items():
        curve = exclusion_curve(prep, lw, o, LEVEL, KS)
        assert area(ranked) < area(curve) - 0.1, (name, [m.loss for m in curve], [m.loss for m in ranked])
        assert ranked[0].loss < curve[0].loss, name


def test_demo_names_its_layers_as_the_layer_table_does(demo) -> None:
    result, _, _ = demo
    from slimline.core.demo import demo_paths
    from slimline.core.models import open_model
    from slimline.core.stats import layer_inventory

    tensors = {r.name for r in layer_inventory(open_model(demo_paths()["torch"]))}
    assert {r.tensor for r in result.rows} <= tensors and Path(result.model).name == "digits_cnn.safetensors"
