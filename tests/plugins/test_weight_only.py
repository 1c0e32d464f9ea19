"""Weight-only INT4/INT8 of ONNX language models: smaller, still the same LM, or refused with the figures.

One tiny Llama (2 blocks, trained 60 steps on real English) is built once per module as the genai
builder's KV-cache folder and as a plain logits export; every run uses a few short windows of its
training text and one thread.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from slimline.core.errors import Cancelled, StepFailed
from slimline.core.plugin import CancelToken, StepContext
from slimline.plugins.weight_only import QuantizeWeightOnly
from slimline.plugins.weight_only.params import (
    PRESETS,
    WeightOnlyParams,
    auto_block_size,
    auto_head_block,
    promoted_block,
)
from slimline.plugins.weight_only.record import WeightOnlyRecord
from tests.plugins import lm_onnx

FAST = {"window_length": 32, "calibration_windows": 3, "check_windows": 3, "timing_runs": 0}


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    hf, text = lm_onnx.tiny_llama(root)
    return {"hf": hf, "text": text, "builder": lm_onnx.builder_onnx(hf, root / "builder")}


@pytest.fixture(scope="module")
def plain(lm, tmp_path_factory):
    return lm_onnx.logits_onnx(lm["hf"], tmp_path_factory.mktemp("plain") / "export")


def _run(model: Path, work: Path, cancel: CancelToken | None = None, progress=None, **params):
    from slimline.core.models import open_model

    plugin = QuantizeWeightOnly()
    handle = open_model(model)
    p = WeightOnlyParams(**params)
    assert plugin.check(handle, p) == []
    return plugin.run(handle, p, StepContext(work_dir=work, threads=1, cancel=cancel or CancelToken(),
                                             progress_cb=progress))


def _ops(path: str) -> dict[str, int]:
    import onnx

    m = onnx.load(path, load_external_data=False)
    out: dict[str, int] = {}
    for n in m.graph.node:
        out[n.op_type] = out.get(n.op_type, 0) + 1
    return out


def _float_elements(path: str) -> int:
    import onnx

    m = onnx.load(path)
    return sum(int(np.prod(t.dims)) for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)


def _largest_float(path: str) -> int:
    import onnx

    m = onnx.load(path)
    return max(int(np.prod(t.dims)) for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)


def test_int4_default_preset_on_the_builder_folder(lm, tmp_path):
    out = _run(lm["builder"], tmp_path / "w", text_file=str(lm["text"]), **FAST)
    m = out.metrics
    assert m["size_ratio"] < 0.3, m                       # fp32 → 4-bit blocks of 32 (embedding included)
    assert m["perplexity_increase"] < 0.05 and m["next_token_agreement"] > 0.85, m
    assert math.isfinite(m["perplexity_after"]) and m["check_tokens"] == 3 * 32
    ops = _ops(out.model.path)
    assert ops.get("MatMul", 0) == 0 and ops["MatMulNBits"] == 11    # 2 blocks × (qkv, o, gate, up, down) + head
    assert ops["GatherBlockQuantized"] == 1                           # the tied embedding reads the packed head
    assert _float_elements(out.model.path) < 512 * 64 // 4            # no float copy of the 512×64 table is left
    folder = Path(out.model.path).parent
    for name in ("genai_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).read_bytes() == (lm["builder"].parent / name).read_bytes()
    record = WeightOnlyRecord.model_validate_json((folder / "weight_only.json").read_text(encoding="utf-8"))
    kinds = {r.kind: r for r in record.layers}
    assert kinds["embedding"].bits == 4 and "tied" in kinds["embedding"].why and kinds["lm_head"].bits == 4
    assert record.check.perplexity.value == pytest.approx(m["perplexity_after"])
    assert any("check on llama-corpus.txt: 3 windows × 32 tokens" in n for n in out.notes), out.notes


def test_int4_output_still_generates_with_onnxruntime_genai(lm, tmp_path):
    og = pytest.importorskip("onnxruntime_genai")
    out = _run(lm["builder"], tmp_path / "w", text_file=str(lm["text"]), **FAST)
    model = og.Model(str(Path(out.model.path).parent))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=12, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(np.array([[1, 40, 41, 42]], dtype=np.int32))
    while not gen.is_done():
        gen.generate_next_token()
    assert len(gen.get_sequence(0)) == 12


def test_int8_keeps_the_lm_within_half_a_percent(lm, tmp_path):
    out = _run(lm["builder"], tmp_path / "w", text_file=str(lm["text"]), preset="int8", block_size=32, **FAST)
    m = out.metrics
    assert abs(m["perplexity_increase"]) < 0.005 and m["next_token_agreement"] > 0.97, m
    assert m["size_ratio"] < 0.4, m
    record = json.loads((Path(out.model.path).parent / "weight_only.json").read_text(encoding="utf-8"))
    assert {r["bits"] for r in record["layers"]} == {8}


def test_int4_fast_preset_keeps_every_layer_at_4_bits_without_zero_points(lm, tmp_path):
    out = _run(lm["builder"], tmp_path / "w", text_file=str(lm["text"]), preset="int4-fast", **FAST)
    folder = Path(out.model.path).parent
    record = WeightOnlyRecord.model_validate_json((folder / "weight_only.json").read_text(encoding="utf-8"))
    assert {r.bits for r in record.layers} == {4}                     # nothing promoted to 8 bits
    import onnx

    nbits = [n for n in onnx.load(out.model.path).graph.node if n.op_type == "MatMulNBits"]
    assert nbits and all(len(n.input) == 3 for n in nbits)            # A, B, scales: no zero points
    default = _run(lm["builder"], tmp_path / "d", text_file=str(lm["text"]), **FAST)
    assert out.metrics["size_ratio"] < default.metrics["size_ratio"]


def test_plain_logits_export_with_tied_weights(plain, lm, tmp_path):
    out = _run(plain, tmp_path / "w", text_file=str(lm["text"]), **FAST)
    assert out.metrics["perplexity_increase"] < 0.05, out.metrics
    ops = _ops(out.model.path)
    assert ops["GatherBlockQuantized"] == 1 and ops["MatMulNBits"] == 15    # q, k, v apart: 2 × 7 + head
    # the 512×64 table and every projection (the smallest is 64×32) are gone from the float weights
    assert _largest_float(str(plain)) == 512 * 64 and _largest_float(out.model.path) < 64 * 32
    assert any("sequence length fixed at 33" in n for n in out.notes), out.notes


def test_mixed_precision_keeps_the_most_sensitive_layers_at_8_bits(lm, tmp_path):
    out = _run(lm["builder"], tmp_path / "w", text_file=str(lm["text"]), perplexity_budget=0.00001,
               max_promoted_share=0.5, **FAST)
    rows = [r for r in out.tables["weight_only_layers"] if r["kind"] != "embedding"]
    high = [r for r in rows if r["bits"] == 8]
    low = [r for r in rows if r["bits"] == 4]
    assert high and low
    # the 8-bit layers are the most sensitive ones that fit the 50 % size cap, in that order
    from slimline.plugins.weight_only.search import greedy_order

    sizes = {r["name"]: int(np.prod([int(d) for d in r["shape"].split("×")])) for r in rows}
    order = greedy_order({r["name"]: r["sensitivity"] for r in rows}, sizes, 0.5, first=("/lm_head/MatMul",))
    assert order[0] == "/lm_head/MatMul"
    assert {r["name"] for r in high} == set(order[:len(high)])
    assert sum(sizes[r["name"]] for r in high) <= 0.5 * sum(sizes.values())
    assert all("8 bits" in r["why"] for r in high)
    # kept at 8 bits in the larger block that divides the input (64 or 128 here, not the step's 32), no zero points
    assert all(r["block_size"] == promoted_block(int(r["shape"].split("×")[0]), 32) > 32 for r in high), high
    import onnx

    m = onnx.load(out.model.path, load_external_data=False)
    wide = [n for n in m.graph.node if n.op_type == "MatMulNBits" and {a.name: a.i for a in n.attribute}["bits"] == 8]
    assert wide and all(len(n.input) < 4 or not n.input[3] for n in wide)
    assert promoted_block(576, 32) == 64 and promoted_block(640, 32) == 128 and promoted_block(100, 32) == 32
    trials = out.tables["mixed_precision_search"]
    assert trials[0]["promoted_layers"] == 0 and len(trials) >= 2
    assert out.metrics["promoted_layers"] == len(high)


def test_sensitivity_order_drives_the_search():
    from slimline.core.lm.score import LMComparison, Perplexity
    from slimline.plugins.weight_only.search import greedy_order, search_promotions

    errors = {"a": 0.1, "b": 0.5, "c": 0.3, "head": 0.9}
    sizes = {"a": 10, "b": 10, "c": 10, "head": 100}
    order = greedy_order(errors, sizes, 0.25)
    assert order == ["b", "c", "a"]          # the head does not fit 25 % of 130 and is skipped, not the rest
    assert greedy_order(errors, sizes, 0.9, first=("head",)) == ["head", "b"]   # first when it fits
    p = Perplexity(value=1.0, low=1.0, high=1.0, nll=0.0, tokens=1, windows=1)

    def measure(k: int) -> LMComparison:
        inc = [0.5, 0.2, 0.04, 0.01][k]
        return LMComparison(perplexity=p, original=p, increase=inc, increase_low=inc, increase_high=inc,
                            agreement=1 - inc, kl_topk=inc)

    k, trials = search_promotions(order, sizes, measure, 0.05)
    assert k == 2 and [t.promoted_layers for t in trials] == [0, 1, 2]
    k, trials = search_promotions(order, sizes, measure, 0.001)   # never met: the best candidate, flagged by caller
    assert k == 3 and not any(t.within_budget for t in trials)


def test_a_broken_quantizer_is_refused_with_the_figure(lm, tmp_path, monkeypatch):
    from slimline.plugins.weight_only import plugin as plugin_mod

    real = plugin_mod.quantize_weights

    def broken(*args, **kwargs):
        got = real(*args, **kwargs)
        for q in got.values():
            q.scales = np.full_like(q.scales, np.nan)
        return got

    monkeypatch.setattr(plugin_mod, "quantize_weights", broken)
    work = tmp_path / "w"
    with pytest.raises(StepFailed, match=r"broken: perplexity [\d.]+ → nan .*not passed on"):
        _run(lm["builder"], work, text_file=str(lm["text"]), perplexity_budget=0.0, **FAST)
    assert not list(work.glob("*.onnx")) and not list(work.glob(".weight-only-*"))


def test_a_result_past_the_allowed_increase_is_refused(lm, tmp_path):
    work = tmp_path / "w"
    with pytest.raises(StepFailed) as err:
        _run(lm["builder"], work, text_file=str(lm["text"]), bits=4, block_size=256, symmetric=True,
             perplexity_budget=0.0, max_perplexity_increase=1e-6, **FAST)
    assert "too far from the input" in err.value.message and "next-token agreement" in err.value.message
    assert "max_perplexity_increase" in err.value.hint
    assert not list(work.glob("*.onnx"))


def test_cancel_is_honoured_and_leaves_nothing(lm, tmp_path):
    token = CancelToken()
    seen: list[float] = []

    def progress(fraction: float, message: str) -> None:
        seen.append(fraction)
        if fraction >= 0.15:
            token.cancel()

    work = tmp_path / "w"
    with pytest.raises(Cancelled):
        _run(lm["builder"], work, cancel=token, progress=progress, text_file=str(lm["text"]), **FAST)
    assert seen and max(seen) < 0.9
    assert not list(work.glob("*.onnx")) and not list(work.glob(".weight-only-*"))
    before = lm["builder"].with_suffix(".onnx.data").stat().st_size
    assert before > 400_000  # the input folder is untouched


def test_without_text_the_models_own_samples_are_used(lm, tmp_path):
    out = _run(lm["builder"], tmp_path / "w", **FAST)
    assert any("model's own samples" in w for w in out.warnings), out.warnings
    assert math.isfinite(out.metrics["perplexity_after"]) and out.metrics["perplexity_increase"] < 0.1


@pytest.mark.parametrize("algorithm", ["hqq", "k_quant", "gptq"])
def test_other_algorithms(lm, tmp_path, algorithm):
    out = _run(lm["builder"], tmp_path / "w", text_file=str(lm["text"]), algorithm=algorithm,
               perplexity_budget=0.0, accuracy_level=0, **{**FAST, "calibration_windows": 2})
    assert out.metrics["perplexity_increase"] < 0.1, out.metrics
    record = json.loads((Path(out.model.path).parent / "weight_only.json").read_text(encoding="utf-8"))
    algos = {r["name"]: r["algorithm"] for r in record["layers"]}
    assert algos["/model/layers.0/mlp/up_proj/MatMul"] == algorithm
    if algorithm == "hqq":  # the tied head must feed GatherBlockQuantized: integer zero points
        assert algos["/lm_head/MatMul"] == "rtn"
    import onnx

    m = onnx.load(out.model.path, load_external_data=False)
    assert not any(a.name == "accuracy_level" for n in m.graph.node for a in n.attribute)


def test_accuracy_level_is_written_on_every_matmulnbits(lm, tmp_path):
    import onnx

    out = _run(lm["builder"], tmp_path / "w", text_file=str(lm["text"]), accuracy_level=4, perplexity_budget=0.0,
               **FAST)
    m = onnx.load(out.model.path, load_external_data=False)
    levels = [a.i for n in m.graph.node if n.op_type == "MatMulNBits" for a in n.attribute
              if a.name == "accuracy_level"]
    assert levels == [4] * 11


def test_check_names_what_is_wrong(lm, tmp_path, make_tiny_mlp):
    from slimline.core.handle import ModelHandle
    from slimline.core.models import open_model

    plugin = QuantizeWeightOnly()
    p = WeightOnlyParams()
    torch_model = ModelHandle(path="x.safetensors", format="slimline_torch", family="torch")
    assert "Convert to ONNX" in plugin.check(torch_model, p)[0].fix
    mlp = tmp_path / "mlp.onnx"
    from tests.core import modelfiles as mf

    mf.onnx_from_torch(mlp)
    got = plugin.check(open_model(mlp), p)
    assert got and "not a language model" in got[0].message
    missing = plugin.check(open_model(lm["builder"]), WeightOnlyParams(text_file=str(tmp_path / "none.txt")))
    assert missing[0].field == "text_file"
    all_out = plugin.check(open_model(lm["builder"]), WeightOnlyParams(nodes_to_exclude=("*MatMul",)))
    assert all_out[0].field == "nodes_to_exclude"
    done = _run(lm["builder"], tmp_path / "q", text_file=str(lm["text"]), perplexity_budget=0.0, **FAST)
    again = plugin.check(open_model(done.model.path), p)
    assert again and "already weight-only quantized" in again[0].message


def test_int8_preset_picks_its_block_from_the_layers(lm, tmp_path):
    out = _run(lm["builder"], tmp_path / "w", text_file=str(lm["text"]), preset="int8", **FAST)
    rows = out.tables["weight_only_layers"]
    assert {r["block_size"] for r in rows if r["bits"]} == {64}          # 128 does not divide the tiny model's inputs
    assert any("block size 64 (automatic" in n for n in out.notes), out.notes
    assert auto_block_size({640, 2048}) == 128 and auto_block_size({576, 1536}) == 64 and auto_block_size(set()) == 64


def test_the_lm_head_takes_its_own_block_and_the_tied_embedding_follows(lm, tmp_path):
    out = _run(lm["builder"], tmp_path / "w", text_file=str(lm["text"]), block_size=16, lm_head_block_size=64,
               **FAST)
    rows = {r["kind"]: r for r in out.tables["weight_only_layers"]}
    blocks = {r["block_size"] for r in out.tables["weight_only_layers"] if r["kind"] == "linear"}
    assert blocks == {16} and rows["lm_head"]["block_size"] == 64 and rows["embedding"]["block_size"] == 64
    assert out.metrics["perplexity_increase"] < 0.1 and math.isfinite(out.metrics["perplexity_after"])
    import onnx

    m = onnx.load(out.model.path, load_external_data=False)
    gather = next(n for n in m.graph.node if n.op_type == "GatherBlockQuantized")
    assert {a.name: a.i for a in gather.attribute}["block_size"] == 64
    # automatic: 128 where it divides the head's input (Gemma 3's 640), else the step's block (SmolLM2's 576)
    assert auto_head_block(640, 32) == 128 and auto_head_block(576, 32) == 32 and auto_head_block(640, 256) == 256
    default = _run(lm["builder"], tmp_path / "d", text_file=str(lm["text"]), **FAST)   # hidden 64: no change
    assert {r["block_size"] for r in default.tables["weight_only_layers"] if r["bits"]} == {32}


def test_params_presets_and_refusals():
    assert WeightOnlyParams().resolved() == PRESETS["int4"]
    s = WeightOnlyParams(preset="int8", block_size=32).resolved()
    assert (s.bits, s.block_size, s.symmetric, s.head_block_size) == (8, 32, True, 32)   # the head follows a set block
    assert WeightOnlyParams().resolved().head_block_size == 0                             # the preset's: automatic
    assert WeightOnlyParams(block_size=32, lm_head_block_size=128).resolved().head_block_size == 128
    with pytest.raises(ValidationError, match="GPTQ writes 4-bit"):
        WeightOnlyParams(preset="int8", algorithm="gptq")
    with pytest.raises(ValidationError, match="float zero"):
        WeightOnlyParams(bits=8, algorithm="hqq")
    with pytest.raises(ValidationError):
        WeightOnlyParams(block_size=48)
    with pytest.raises(ValidationError):
        WeightOnlyParams(unknown=1)
    p = WeightOnlyParams(algorithm="k_quant", nodes_to_exclude=("*lm_head*",))
    assert WeightOnlyParams.model_validate(json.loads(json.dumps(p.model_dump(mode="json")))) == p
    schema = WeightOnlyParams.model_json_schema()
    assert all(f.get("description") for f in schema["properties"].values())


def test_dequantize_matches_the_kernel_and_zero_points_round_trip():
    from onnx import helper, numpy_helper

    from slimline.core.runtime import ort_inference_session
    from slimline.plugins.weight_only import quant

    rng = np.random.default_rng(0)
    w = rng.normal(size=(80, 24)).astype(np.float32)   # 80 rows: a padded last block of 32
    for algorithm, bits, sym in [("rtn", 4, False), ("rtn", 8, True), ("k_quant", 4, False), ("hqq", 4, False)]:
        q = quant.quantize_weights(["w"], lambda _: w, algorithm=algorithm, bits=bits, block_size=32,
                                   symmetric=sym)["w"]
        assert q.k == 80 and q.k_blocks == 3
        x = rng.normal(size=(2, 80)).astype(np.float32)
        inits = [numpy_helper.from_array(q.packed, "b"), numpy_helper.from_array(q.scales, "s")]
        names = ["x", "b", "s"]
        if q.zero_points is not None:
            inits.append(numpy_helper.from_array(q.zero_points, "z"))
            names.append("z")
        node = helper.make_node("MatMulNBits", names, ["y"], domain="com.microsoft", K=80, N=24, bits=bits,
                                block_size=32)
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [2, 80])],
                              [helper.make_tensor_value_info("y", 1, [2, 24])], inits)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("com.microsoft", 1)])
        y = ort_inference_session(model.SerializeToString(), threads=1).run(None, {"x": x})[0]
        np.testing.assert_allclose(y, x @ q.dequantize(), rtol=1e-4, atol=1e-4)
        assert np.abs(q.dequantize() - w).mean() < (0.15 if bits == 4 else 0.01) * np.abs(w).mean()
        if q.zero_points is not None and q.integer_zero_points:
            unpacked = quant.unpack_zero_points(q.zero_points, 24, 3, bits)
            np.testing.assert_array_equal(quant.pack_zero_points(unpacked, bits), q.zero_points)


def test_benchmark_skips_with_a_message_without_the_corpus(tmp_path, monkeypatch, capsys):
    from benchmarks import bench_llm_weight_only

    monkeypatch.setenv("SLIMLINE_REALMODELS", str(tmp_path / "empty"))
    monkeypatch.setenv("SLIMLINE_BENCH_CACHE", str(tmp_path / "cache"))
    bench_llm_weight_only.main()
    out = capsys.readouterr().out
    assert "SKIPPED" in out and "smollm2-135m-q4_1" in out and "make realmodels" in out
    assert not (tmp_path / "cache").exists()


def test_smoothing_is_exact_in_float_and_leaves_the_tied_head_alone(lm):
    import onnx

    from slimline.core.lm.onnx_lm import OnnxLM, read_signature
    from slimline.plugins.weight_only.graph import prepare
    from slimline.plugins.weight_only.sensitivity import input_stats
    from slimline.plugins.weight_only.smooth import smooth
    path = lm["builder"]
    model = onnx.load(str(path))
    sig = read_signature(model, path.parent)
    lmg = prepare(model, sig.logits, sig.vocab, sig.input_ids)
    from slimline.core.lm.text import load_tokenizer, text_windows

    w = text_windows(lm["text"], load_tokenizer(path.parent), length=32, count=2)
    before = OnnxLM(path, sig, threads=1).logits(w.ids[0])
    stats = input_stats(lmg, sig, w, threads=1, block=32, session_source=lambda m: m.SerializeToString())
    head_weight = lmg.weight(lmg.lm_head.weight).copy()
    done = smooth(lmg, {lin.node for lin in lmg.linears}, {k: v.max_abs for k, v in stats.items()}, 0.5)
    # per block: the attention input (qkv), the MLP input (gate + up), the down projection's input
    assert len(done) == 6 and sorted(len(d.layers) for d in done) == [1, 1, 1, 1, 2, 2]
    assert all(lmg.lm_head.node not in d.layers for d in done)
    np.testing.assert_array_equal(lmg.weight(lmg.lm_head.weight), head_weight)
    after = OnnxLM(lmg.model.SerializeToString(), sig, threads=1).logits(w.ids[0])
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4)
    moved = [d for d in done if "up_proj" in d.folded_into]
    assert len(moved) == 2   # Mul(act(gate), up) → down: the division went into the up projection's columns


def test_int8_spares_layers_from_int8_activations_to_meet_the_budget(lm, tmp_path):
    import onnx

    out = _run(lm["builder"], tmp_path / "w", text_file=str(lm["text"]), preset="int8", block_size=32,
               perplexity_budget=1e-6, max_promoted_share=0.3, **FAST)
    rows = [r for r in out.tables["weight_only_layers"] if r["kind"] != "embedding"]
    spared = [r for r in rows if r["accuracy_level"] == 0]
    assert spared and all("float activations" in r["why"] for r in spared)
    assert all(r["bits"] == 8 for r in rows)
    m = onnx.load(out.model.path, load_external_data=False)
    levels = {n.name.removesuffix("_Q8"): next((a.i for a in n.attribute if a.name == "accuracy_level"), 0)
              for n in m.graph.node if n.op_type == "MatMulNBits"}
    assert {r["name"] for r in spared} == {k for k, v in levels.items() if v == 0}
    assert any("activation smoothing" in n for n in out.notes)


def test_an_untied_embedding_gets_its_own_quantized_table(tmp_path):
    import onnx

    from tests.core import modelfiles as mf

    hf = mf.hf_llama(tmp_path / "untied", tie=False, train_steps=30)
    path = lm_onnx.builder_onnx(hf, tmp_path / "builder")
    out = _run(path, tmp_path / "w", text_file=str(tmp_path / "untied-corpus.txt"), perplexity_budget=0.0, **FAST)
    assert out.metrics["perplexity_increase"] < 0.05, out.metrics
    m = onnx.load(out.model.path)
    gather = next(n for n in m.graph.node if n.op_type == "GatherBlockQuantized")
    table = next(t for t in m.graph.initializer if t.name == gather.input[0])
    assert table.data_type == onnx.TensorProto.UINT8 and list(table.dims) == [512, 32]   # 64 values, 4 bits
    assert _largest_float(out.model.path) <= 256 * 8   # only the rotary cos/sin caches are left in float
    rows = {r["kind"]: r for r in out.tables["weight_only_layers"]}
    assert rows["embedding"]["bits"] == 4 and rows["embedding"]["bytes"] > 0 and rows["lm_head"]["bits"] == 4
