"""A context-length cap on the genai export: rotary tables and genai_config.json say N, the rows kept are the
uncapped ones, the logits are the same, and bad caps are refused with the reason.

Tiny generated models (a 2-layer Llama with 256 positions, a 3-layer Gemma 3 with two RoPE tables) built in
a few seconds each.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from slimline.core.lm.builder_compat import cap_context, context_length_problem, model_context_length
from slimline.core.lm.genai import GenaiError, build_genai_model, context_length_of
from tests.core import modelfiles as mf

CAP = 32


@pytest.fixture(scope="module")
def llama(tiny_lm: Path) -> Path:
    return tiny_lm   # the tests/lm session model (conftest)


@pytest.fixture(scope="module")
def full(tiny_genai: Path) -> Path:
    return tiny_genai   # its uncapped genai build


@pytest.fixture(scope="module")
def capped(llama: Path) -> Path:
    return build_genai_model(llama, llama.parent / "capped", "fp32", context_length=CAP)


def _tables(folder: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(folder / "model.onnx"))
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer if "cos_cache" in t.name
            or "sin_cache" in t.name}


def _logits(folder: Path, ids: np.ndarray) -> np.ndarray:
    from slimline.core.lm.genai import empty_past_feeds, head_size_of
    from slimline.core.runtime import ort_inference_session

    sess = ort_inference_session(folder / "model.onnx", threads=1)
    return sess.run(["logits"], empty_past_feeds(sess.get_inputs(), ids, head_size_of(folder)))[0]


def test_capped_build_serves_n_positions_with_the_first_n_rotary_rows(full: Path, capped: Path) -> None:
    cfg = json.loads((capped / "genai_config.json").read_text())
    assert cfg["model"]["context_length"] == CAP == cfg["search"]["max_length"] == context_length_of(capped)
    assert context_length_of(full) == 256
    big, small = _tables(full), _tables(capped)
    assert set(small) == set(big) == {"cos_cache", "sin_cache"}
    for name, table in small.items():
        assert table.shape[0] == CAP and big[name].shape[0] == 256
        np.testing.assert_array_equal(table, big[name][:CAP])
    ids = np.random.default_rng(0).integers(3, 500, (1, CAP))
    np.testing.assert_allclose(_logits(capped, ids), _logits(full, ids), atol=1e-5)


def test_generation_past_the_cap_is_refused_with_the_reason(capped: Path) -> None:
    from slimline.core.lm.genai import genai_generate, genai_model

    model = genai_model(capped, threads=1)
    assert len(genai_generate(model, list(range(3, 23)), CAP - 20, threads=1).tokens) == CAP - 20
    with pytest.raises(GenaiError, match=r"cannot be greater than model context_length \(32\)") as err:
        genai_generate(model, list(range(3, 23)), CAP, threads=1)
    assert "lm_context_length" in err.value.hint


def test_caps_outside_the_model_range_are_refused_and_leave_nothing(llama: Path, tmp_path: Path) -> None:
    with pytest.raises(GenaiError, match=r"more than the model was made for \(256 positions"):
        build_genai_model(llama, tmp_path / "out", "fp32", context_length=257)
    with pytest.raises(GenaiError, match="below the smallest one served"):
        build_genai_model(llama, tmp_path / "out", "fp32", context_length=8)
    assert list(tmp_path.iterdir()) == []


def test_a_cap_at_the_model_length_is_the_plain_build(llama: Path, tmp_path: Path, monkeypatch) -> None:
    """Nothing to cut: the builder runs as it would without a cap (no compat module, no extra argument)."""
    import subprocess

    seen: list[list[str]] = []

    def spy(cmd: list[str], *a: object, **k: object) -> None:
        seen.append(list(cmd))
        raise RuntimeError("command recorded")

    monkeypatch.setattr(subprocess, "Popen", spy)
    for n, module in ((256, "onnxruntime_genai.models.builder"), (255, "slimline.core.lm.builder_compat")):
        with pytest.raises(RuntimeError, match="command recorded"):
            build_genai_model(llama, tmp_path / "same", "fp32", context_length=n)
        assert module in seen[-1] and ("--slimline_context_length" in seen[-1]) == (n == 255)


def test_gemma3_two_rope_tables_are_cut_and_logits_equal_torch(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Gemma 3 goes through the compat patch already: the cap is applied beside flatten_rope, to both tables."""
    from transformers import AutoModelForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig

    root = tmp_path_factory.mktemp("gemma3ctx")
    tok_src = mf.hf_llama(root / "llama")
    cfg = Gemma3TextConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=32, sliding_window=16,
                           layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                           max_position_embeddings=256, query_pre_attn_scalar=32, bos_token_id=1, eos_token_id=2,
                           pad_token_id=0, tie_word_embeddings=True)
    torch.manual_seed(0)
    folder = root / "gemma3"
    Gemma3ForCausalLM(cfg).eval().save_pretrained(str(folder))
    for f in tok_src.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copyfile(f, folder / f.name)
    built = build_genai_model(folder, root / "capped", "fp32", context_length=48)
    assert context_length_of(built) == 48
    tables = _tables(built)
    assert len(tables) == 4 and all(t.shape[0] == 48 for t in tables.values())  # global and local RoPE
    ids = np.random.default_rng(0).integers(3, 512, (1, 40))  # past the sliding window of 16
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(str(folder)).eval()(torch.from_numpy(ids)).logits.numpy()
    assert np.abs(_logits(built, ids) - ref).max() < 1e-4 * max(1.0, float(np.abs(ref).max()))


# ------------------------------------------------------------------------ the config patch and the checks


def test_cap_context_keeps_what_rope_rescaling_reads() -> None:
    llama3 = SimpleNamespace(max_position_embeddings=131072, rope_parameters={
        "rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192})
    cap_context(llama3, 4096)
    # the builder reads the attribute (else max_position_embeddings): it keeps what it used before the cap
    assert llama3.max_position_embeddings == 4096 and llama3.original_max_position_embeddings == 131072
    plain = SimpleNamespace(max_position_embeddings=32768, rope_parameters={"rope_type": "default"}, seq_length=32768)
    cap_context(plain, 1024)
    assert plain.max_position_embeddings == 1024 == plain.seq_length
    assert not hasattr(plain, "original_max_position_embeddings")
    phi4k = SimpleNamespace(max_position_embeddings=4096, original_max_position_embeddings=4096)
    cap_context(phi4k, 2048)  # the builder picks Phi-3's variant by comparing the two: they stay equal
    assert phi4k.max_position_embeddings == 2048 == phi4k.original_max_position_embeddings
    nested = SimpleNamespace(text_config=SimpleNamespace(max_position_embeddings=32768))
    cap_context(nested, 4096)
    assert nested.text_config.max_position_embeddings == 4096
    cap_context(plain, 2048)  # only ever lowers
    assert plain.max_position_embeddings == 1024


def test_context_length_problems_name_the_limit() -> None:
    cfg = {"model_type": "llama", "max_position_embeddings": 2048}
    assert context_length_problem(cfg, 2048) is None and context_length_problem(cfg, 16) is None
    assert "below the smallest one served (16 positions)" in str(context_length_problem(cfg, 15))
    assert "more than the model was made for (2048 positions" in str(context_length_problem(cfg, 4096))
    assert "no max_position_embeddings" in str(context_length_problem({"model_type": "x"}, 64))
    phi = {"max_position_embeddings": 131072, "rope_scaling": {"type": "longrope"}}
    assert "LongRoPE" in str(context_length_problem(phi, 4096))
    assert model_context_length({"model_type": "gemma3", "text_config": {"max_position_embeddings": 32768}}) == 32768


def test_convert_param_and_check(llama: Path) -> None:
    from slimline.core.models import open_model
    from slimline.plugins.convert import ConvertToOnnx

    params = ConvertToOnnx.Params
    assert params().lm_context_length == 0
    with pytest.raises(ValidationError, match="use 0 \\(the model's own length\\) or at least 16"):
        params(lm_context_length=8)
    handle = open_model(llama)
    plugin = ConvertToOnnx()
    assert plugin.check(handle, params(lm_context_length=CAP)) == []
    (problem,) = plugin.check(handle, params(lm_context_length=1000))
    assert problem.field == "lm_context_length" and "256 positions" in problem.message
    assert "between 16 and 256" in problem.fix
    (warning,) = plugin.check(handle, params(lm_context_length=CAP, lm_method="logits"))
    assert warning.severity == "warning" and "genai" in warning.message


def test_convert_step_reports_the_context_it_serves(llama: Path, tmp_path: Path) -> None:
    """Parity windows and greedy prompts fit inside the cap, so a 32-position export still passes its check."""
    from slimline.core.models import open_model
    from slimline.core.plugin import StepContext
    from slimline.plugins.convert import ConvertToOnnx

    out = ConvertToOnnx().run(open_model(llama), ConvertToOnnx.Params(lm_context_length=CAP, lm_parity_windows=2),
                              StepContext(work_dir=tmp_path, threads=1))
    notes = "\n".join(out.notes)
    assert f"serves at most {CAP} tokens" in notes and "not the model's 256" in notes
    assert out.model.meta["kv_cache"]["context_length"] == CAP
    assert out.metrics["greedy_tokens"] > 0 and out.metrics["parity_top1_agreement"] == 1.0
