"""Weight-only quantization layer by layer: the perplexity ranking and a mixed 8/4-bit search on a tiny LM.

The tiny Llama (2 blocks, the genai builder's KV-cache folder, trained briefly on real English) gets one
outlier input channel in block 0's qkv projection: the channel's norm scale divided by 24 and the weight row
multiplied by 24 — the same function in float, but 4-bit blocks of that layer lose the other channels beside
the outlier (smoothing, which would undo it, is off). So one layer needs 8 bits and the rest do not: the
search must keep that one at 8 bits and still come out smaller than uniform INT8, within the LM budget.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from slimline.core.models import open_model
from slimline.core.pipeline import Budgets, Evaluation, LMSettings
from tests.plugins import lm_onnx

OUTLIER = "/model/layers.0/attn/qkv_proj/MatMul"
PARAMS = {"window_length": 32, "calibration_windows": 4, "check_windows": 2, "timing_runs": 0, "smooth_alpha": 0.0}
EVAL = Evaluation(budgets=Budgets(token_max_perplexity_increase=0.01),
                  lm=LMSettings(window_length=64, window_count=6, prompt_count=1, max_new_tokens=4))


def _with_outlier(src: Path, dst: Path, factor: float = 24.0) -> Path:
    import onnx
    from onnx import numpy_helper

    shutil.copytree(src.parent, dst)
    m = onnx.load(str(src))
    inits = {i.name: i for i in m.graph.initializer}
    node = next(n for n in m.graph.node if n.name == OUTLIER)
    norm = next(n for n in m.graph.node if node.input[0] in n.output)
    gamma_name = norm.input[1]
    w, g = numpy_helper.to_array(inits[node.input[1]]).copy(), numpy_helper.to_array(inits[gamma_name]).copy()
    k = int(np.argmax(np.abs(g)))
    w[k] *= factor
    g[k] /= factor
    inits[node.input[1]].CopyFrom(numpy_helper.from_array(w, node.input[1]))
    inits[gamma_name].CopyFrom(numpy_helper.from_array(g, gamma_name))
    for f in ("model.onnx", "model.onnx.data"):
        (dst / f).unlink(missing_ok=True)
    onnx.save(m, str(dst / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    return dst / "model.onnx"


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmlw")
    hf, text = lm_onnx.tiny_llama(root)
    return {"model": _with_outlier(lm_onnx.builder_onnx(hf, root / "builder"), root / "outlier"), "text": text}


def _bundle(model, text):
    from slimline.core.runner import load_bundle

    return load_bundle(EVAL, model, str(text), None)


def test_ranking_by_perplexity_puts_the_outlier_layer_first(lm, tmp_path):
    from slimline.core.sensitivity.analyze import analyze
    from slimline.core.sensitivity.models import SensitivitySettings

    model = open_model(lm["model"])
    res = analyze(model, _bundle(model, lm["text"]), SensitivitySettings(
        step="builtin.quantize_weight_only", params=PARAMS, modes=["alone"], top_k=3, max_rows=4, threads=1),
        workspace=tmp_path)
    assert res.task == "token_logits" and res.metric.startswith("perplexity increase on ")
    assert res.default_level == "int4" and {lv.level for lv in res.rows[0].levels} == {"int8", "int4"}
    measured = {r.layer: r for r in res.rows if r.source == "end_metric"}
    assert OUTLIER in measured, [(r.layer, r.source) for r in res.rows]   # the cheap score put it in the top 3
    top = measured[OUTLIER]
    # its damage alone at 4 bits, as KL to the original, is far above every other measured layer's (perplexity
    # of this barely trained model moves by tenths of a percent either way: the rows carry both figures)
    assert all(top.fidelity_score > 3 * r.fidelity_score for r in measured.values() if r is not top)
    int4 = top.level("int4")
    assert int4 is not None and int4.alone is not None and int4.alone.value == pytest.approx(top.score)
    assert int4.output_error is not None and int4.output_error > 2 * max(
        r.level("int4").output_error for r in res.rows if r.layer != OUTLIER)
    assert len(res.rows) == 11 and len(measured) in (3, 4)   # the top 3 by cheap score, and the LM head always
    assert "/lm_head/MatMul" in measured
    assert any("units: each of the 11 MatMuls" in n for n in res.notes)


def test_search_meets_the_lm_budget_smaller_than_uniform_int8(lm, tmp_path):
    from slimline.core.search.models import SearchSettings
    from slimline.core.search.run import search

    model = open_model(lm["model"])
    res = search(model, _bundle(model, lm["text"]), SearchSettings(
        step="quantize_weight_only", params=PARAMS, top_k=3, sensitivity_rows=4, max_candidates=8, threads=1),
        workspace=tmp_path, evaluation=EVAL)
    uniform = {c.label.split(" at ")[1][:4]: c for c in res.candidates if c.kind == "uniform"}
    assert not uniform["INT4"].within_budget and uniform["INT8"].within_budget, res.verdict
    chosen = res.candidate(res.chosen)
    assert res.reachable and chosen is not None and chosen.kind != "uniform", res.verdict
    # (uniform INT8 here is the compact 8-bit layout: symmetric, blocks of 64/128, 8.5 bits a weight or less)
    assert chosen.bytes_on_disk < 0.88 * uniform["INT8"].bytes_on_disk, res.verdict
    assert chosen.settings.get(OUTLIER) == "int8"    # the one layer that needs 8 bits keeps them
    assert chosen.metric.value <= 0.01 and res.metric.startswith("perplexity increase vs original")
    bits = chosen.params["layer_bits"]
    assert bits[OUTLIER] == 8 and sum(b == 4 for b in bits.values()) >= 5


def test_params_for_remakes_the_built_model(lm, tmp_path):
    """What the search records (params_for) is what the step's own run makes: same layers, same weights."""
    import onnx

    from slimline.core.plugin import CancelToken, StepContext
    from slimline.core.runner import load_bundle
    from slimline.plugins.weight_only import QuantizeWeightOnly
    from slimline.plugins.weight_only.params import WeightOnlyParams

    model = open_model(lm["model"])
    plugin = QuantizeWeightOnly()
    data = load_bundle(EVAL, model, str(lm["text"]), None)
    params = WeightOnlyParams(**PARAMS, text_file=str(lm["text"]))
    ctx = StepContext(work_dir=tmp_path / "lw", threads=1, cancel=CancelToken(), data=data)
    lw = plugin.layerwise(model, params, ctx)
    try:
        names = [ly.name for ly in lw.layers]
        settings = {names[0]: "int8", names[1]: "int4", names[-1]: "int8"}   # the rest float
        built = lw.build(settings, tmp_path / "built")
        doc = lw.params_for(settings)
    finally:
        lw.close()
    out = plugin.run(model, WeightOnlyParams.model_validate(doc),
                     StepContext(work_dir=tmp_path / "run", threads=1, cancel=CancelToken(), data=data))

    def layers(path: str) -> dict[str, tuple]:
        m = onnx.load(path)
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
        return {n.name: (n.op_type, *(inits[x].tobytes() for x in n.input if x in inits))
                for n in m.graph.node if n.op_type in ("MatMul", "MatMulNBits", "GatherBlockQuantized")}

    a, b = layers(built.path), layers(out.model.path)
    assert a == b
    assert sum(1 for v in a.values() if v[0] == "MatMulNBits") == 3 and doc["layer_bits"][names[2]] == 0
    assert names[-1] == "/lm_head/MatMul" and out.metrics["quantized_layers"] == 4   # + the tied embedding
