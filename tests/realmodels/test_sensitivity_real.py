"""Sensitivity on a real transformer encoder nobody here trained: all-MiniLM-L6-v2 (the corpus's HF folder,
converted to ONNX by the convert step) on real English sentences (pydoc-sentences), dynamic INT8 defaults.

Leaving the ranking's top-k layers in float recovers the pooled cosine step by step, and more than leaving
out the same number of layers in the reversed order: a ranking that carried no information would fail.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from .fetch import ENTRIES, dataset_path, model_path

ROWS, SEQ, TOP_K = 32, 64, 4
KS = [1, 2, 4]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory):
    from slimline.core.data import DataBundle
    from slimline.core.models import open_model
    from slimline.core.sensitivity.analyze import analyze
    from slimline.core.sensitivity.models import SensitivitySettings
    from slimline.core.sensitivity.prepare import prepare

    tmp = tmp_path_factory.mktemp("minilm")
    lines = dataset_path(ENTRIES["pydoc-sentences"]).read_text(encoding="utf-8").splitlines()[:ROWS]
    (tmp / "sentences.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = open_model(model_path(ENTRIES["minilm-l6-v2"])).with_dims(sequence=SEQ)
    data = DataBundle.from_paths(eval=tmp / "sentences.txt", model=model, max_length=SEQ)
    result = analyze(model, data, SensitivitySettings(step="quantize_dynamic", modes=["all_but"], top_k=TOP_K,
                                                      threads=2), workspace=tmp)
    prep = prepare(model, data, "quantize_dynamic", {}, workspace=tmp, threads=2)
    lw = prep.layerwise()
    yield result, prep, lw
    lw.close()
    prep.close()


@pytest.mark.real("minilm-l6-v2", "pydoc-sentences")
@pytest.mark.timeout(900)
def test_minilm_ranking_and_top_k_exclusion_recovers_monotonically(minilm) -> None:
    from slimline.core.sensitivity.recovery import exclusion_curve

    result, prep, lw = minilm
    assert result.task == "embedding" and result.metric.startswith("pooled cosine")
    assert Path(result.step_input).suffix == ".onnx" and len(result.rows) > 30   # 36 Linear layers + embeddings
    from slimline.core.stats import layer_inventory

    hf_names = {r.name for r in layer_inventory(prep.model)}   # the names the layer table shows for the HF folder
    assert sum(r.tensor in hf_names for r in result.rows) >= 36, [r.tensor for r in result.rows[:5]]
    top = result.rows[:TOP_K]
    assert [r.source for r in top] == ["end_metric"] * TOP_K and all(r.score > 0 for r in top)
    assert result.uniform is not None and 0.95 < result.uniform.value < 0.9999   # INT8 costs something, not all
    order = result.ranked_layers()
    ranked = exclusion_curve(prep, lw, order, "int8", KS)
    reversed_ = exclusion_curve(prep, lw, order[::-1], "int8", KS)
    base = result.uniform.value
    rec = [m.value - base for m in ranked]
    rev = [m.value - base for m in reversed_]
    assert all(b >= a - 1e-5 for a, b in zip(rec, rec[1:])), rec          # monotone: more excluded, more recovered
    assert rec[0] > 0 and all(r > v for r, v in zip(rec, rev)), (rec, rev)  # ranked beats reversed at every k
    assert rec[-1] > 2 * max(rev[-1], 1e-6), (rec, rev)
