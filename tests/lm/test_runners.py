"""The same perplexity and greedy tokens from torch, the genai folder (onnxruntime) and a logits-only ONNX."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slimline.core.errors import DataError
from slimline.core.lm.evaluate import LMEvaluator, prepare
from slimline.core.lm.runners import OnnxLogitsRunner, open_runner
from slimline.core.lm.text import load_tokenizer, text_windows
from slimline.core.models import open_model
from slimline.core.pipeline import LMSettings


@pytest.fixture(scope="module")
def measured(tiny_lm: Path, tiny_text: Path, tiny_genai: Path, tiny_logits_onnx: Path) -> dict:
    settings = LMSettings(window_length=32, window_count=6, max_new_tokens=8, prompt_count=3)
    windows = text_windows(tiny_text, load_tokenizer(tiny_lm), length=32, count=6)
    ev = LMEvaluator(prepare(open_model(tiny_lm), settings, windows), settings, threads=1)
    return {name: ev.measure(open_model(path)) for name, path in
            (("torch", tiny_lm), ("genai", tiny_genai / "model.onnx"), ("logits", tiny_logits_onnx))}


def test_torch_and_onnx_perplexity_agree_within_1e_3(measured: dict) -> None:
    ref = measured["torch"]
    assert ref.vs_original is None and ref.tokens == 6 * 32 and ref.windows == 6
    assert ref.perplexity.low < ref.perplexity.value < ref.perplexity.high
    for name in ("genai", "logits"):
        got = measured[name]
        assert abs(got.perplexity.value / ref.perplexity.value - 1) < 1e-3, name
        vs = got.vs_original
        assert vs is not None and abs(vs.increase) < 1e-3 and vs.agreement == 1.0 and vs.kl_topk < 1e-5
        assert vs.increase_low <= vs.increase <= vs.increase_high


def test_engines_threads_and_kv_cache_are_recorded(measured: dict) -> None:
    torch_r, genai_r, logits_r = measured["torch"], measured["genai"], measured["logits"]
    assert torch_r.engine.startswith("torch ") and torch_r.threads == 1
    assert "empty past" in genai_r.engine and genai_r.threads == 1
    assert "logits only" in logits_r.engine
    g_t, g_g, g_l = torch_r.generation, genai_r.generation, logits_r.generation
    assert g_t.kv_cache and "generate (KV cache)" in g_t.engine
    assert g_g.kv_cache and "onnxruntime-genai" in g_g.engine and g_g.threads == 1
    assert not g_l.kv_cache and "no KV cache" in g_l.engine
    for g in (g_t, g_g, g_l):
        assert len(g.samples) == 3 and g.prompts_source.startswith("first 3 sentences of")
        assert g.prefill_ms_min <= g.prefill_ms <= g.prefill_ms_max
        assert 0 < g.decode_tokens_per_s_min <= g.decode_tokens_per_s <= g.decode_tokens_per_s_max
    for r in measured.values():
        assert r.peak_rss_bytes and r.rss_before_bytes and r.peak_rss_bytes >= r.rss_before_bytes // 2
        assert r.memory_method


def test_greedy_continuations_are_the_same_in_every_engine(measured: dict) -> None:
    ref = [s.tokens for s in measured["torch"].generation.samples]
    assert all(ref) and all(len(t) <= 8 for t in ref)
    for name in ("genai", "logits"):
        samples = measured[name].generation.samples
        assert [s.tokens for s in samples] == ref, name
        assert all(s.first_divergence is None and s.split() == (s.text, "") for s in samples)


def test_fixed_length_onnx_pads_shorter_windows_and_refuses_longer_ones(tiny_lm: Path, tiny_logits_onnx: Path) -> None:
    ids = np.random.default_rng(0).integers(3, 400, (3, 25))
    ref = open_runner(open_model(tiny_lm), threads=1).logits(ids)
    runner = OnnxLogitsRunner(tiny_logits_onnx, threads=1)
    assert runner.fixed_seq == 128
    assert np.abs(runner.logits(ids) - ref).max() < 1e-4
    with pytest.raises(DataError) as err:
        runner.logits(np.ones((1, 129), dtype=np.int64))
    assert "exactly 128 tokens" in err.value.message and "window_length" in err.value.hint
    assert str(tiny_logits_onnx) == err.value.subject


def test_a_prompt_longer_than_a_fixed_length_onnx_gets_no_tokens_and_a_note(tiny_lm: Path, tiny_text: Path,
                                                                             tiny_logits_onnx: Path) -> None:
    settings = LMSettings(window_length=32, window_count=2, max_new_tokens=4, prompt_count=2)
    windows = text_windows(tiny_text, load_tokenizer(tiny_lm), length=32, count=2)
    data = prepare(open_model(tiny_lm), settings, windows)
    data.prompt_ids[1] = data.prompt_ids[1] * 8  # far past the ONNX's 128 tokens
    ev = LMEvaluator(data, settings, threads=1)
    rep = ev.measure(open_model(tiny_logits_onnx))
    g = rep.generation
    assert g.samples[1].tokens == [] and g.samples[0].tokens
    assert g.decode_tokens_per_s == g.samples[0].decode_tokens_per_s  # timed over prompts that generated
    assert any("prompt 2" in n and "at most 128 tokens" in n for n in rep.notes)
