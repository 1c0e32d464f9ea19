"""Gemma 3 through the genai model builder: the config fix (nested RoPE under transformers 5), full-length caches
for its sliding-window layers, and the window-sized caches of a builder-default model fed as an empty past.

A tiny random Gemma 3 (3 layers, two of them sliding with a window of 16) run on 40 tokens: past the window, so
the ONNX agrees with torch only if the sliding layers attend as Gemma's do.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from slimline.core.lm.builder_compat import default_options, flatten_rope, needs_compat
from slimline.core.lm.genai import GenaiError, empty_past_feeds, graph_sliding_window, sliding_window_of
from tests.core import modelfiles as mf

WINDOW = 16


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("gemma3")
    llama = mf.hf_llama(root / "llama")  # for its real BPE tokenizer (vocab 512)
    cfg = Gemma3TextConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=32, sliding_window=WINDOW,
                           layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                           max_position_embeddings=256, query_pre_attn_scalar=32, bos_token_id=1, eos_token_id=2,
                           pad_token_id=0, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():  # Gemma's norms hold (weight - 1): random offsets make the "+1" matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.3)
    folder = root / "gemma3"
    model.save_pretrained(str(folder))
    for f in llama.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copyfile(f, folder / f.name)
    return folder


@pytest.fixture(scope="module")
def built(gemma3: Path) -> Path:
    from slimline.core.lm.genai import build_genai_model

    return build_genai_model(gemma3, gemma3.parent / "genai-fp32", "fp32")


def _torch(folder: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder)).eval()


def test_config_is_recognized_and_flattened(gemma3: Path) -> None:
    from transformers import AutoConfig

    raw = json.loads((gemma3 / "config.json").read_text())
    assert set(raw["rope_parameters"]) == {"full_attention", "sliding_attention"}  # what the builder misreads
    assert needs_compat(gemma3) and default_options(gemma3) == {"windowed_kv_cache": "false"}
    cfg = AutoConfig.from_pretrained(str(gemma3))
    flatten_rope(cfg)
    flatten_rope(cfg)  # idempotent
    assert cfg.rope_parameters["rope_type"] == "default" and cfg.rope_theta == 1_000_000.0
    assert cfg.rope_local_base_freq == 10_000.0


def test_a_llama_goes_to_the_builder_untouched(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "rope_parameters": {
        "rope_type": "default", "rope_theta": 10000.0}}))
    assert not needs_compat(tmp_path) and default_options(tmp_path) == {}


def test_genai_export_equals_torch_past_the_window(gemma3: Path, built: Path) -> None:
    from slimline.core.lm.genai import head_size_of
    from slimline.core.runtime import ort_inference_session

    cfg = json.loads((built / "genai_config.json").read_text())
    assert cfg["model"]["type"] == "gemma3_text" and "sliding_window" not in cfg["model"]["decoder"]  # full caches
    ids = np.random.default_rng(0).integers(3, 512, (1, 40))
    sess = ort_inference_session(built / "model.onnx", threads=1)
    got = sess.run(["logits"], empty_past_feeds(sess.get_inputs(), ids, head_size_of(built)))[0]
    with torch.no_grad():
        ref = _torch(gemma3)(torch.from_numpy(ids)).logits.numpy()
    assert np.abs(got - ref).max() < 1e-4 * max(1.0, float(np.abs(ref).max()))


def test_generate_api_runs_below_the_window_and_equals_torch(gemma3: Path, built: Path) -> None:
    """max_length 10 < window 16: the builder's default window-sized cache fails here in onnxruntime 1.32."""
    from slimline.core.lm.genai import genai_generate, genai_model

    prompt = [1, 5, 6, 7]
    gen = genai_generate(genai_model(built, threads=1), prompt, 6, threads=1)
    with torch.no_grad():
        ref = _torch(gemma3).generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, eos_token_id=None,
                                      pad_token_id=0)[0, len(prompt):].tolist()
    assert gen.tokens == ref[:len(gen.tokens)] and len(gen.tokens) == 6


def test_window_sized_caches_are_fed_as_zeros_of_the_window(gemma3: Path, built: Path, tmp_path: Path) -> None:
    """A builder-default model (windowed caches, built elsewhere) runs with an empty past like any other."""
    import onnx

    from slimline.core.lm.genai import build_genai_model, head_size_of, kv_cache_layout
    from slimline.core.runtime import ort_inference_session

    windowed = build_genai_model(gemma3, tmp_path / "windowed", "fp32", extra_options={"windowed_kv_cache": "true"})
    layout = kv_cache_layout(onnx.load(str(windowed / "model.onnx"), load_external_data=False),
                             windowed / "model.onnx")
    assert layout is not None and layout.sliding_window == WINDOW == sliding_window_of(windowed)
    assert graph_sliding_window(onnx.load(str(built / "model.onnx"), load_external_data=False)) is None
    sess = ort_inference_session(windowed / "model.onnx", threads=1)
    ids = np.random.default_rng(1).integers(3, 512, (1, 24))
    feeds = empty_past_feeds(sess.get_inputs(), ids, head_size_of(windowed), layout.sliding_window)
    assert feeds["past_key_values.0.key"].shape[2] == WINDOW and feeds["past_key_values.2.key"].shape[2] == 0
    got = sess.run(["logits"], feeds)[0]
    with torch.no_grad():
        ref = _torch(gemma3)(torch.from_numpy(ids)).logits.numpy()
    assert np.abs(got - ref).max() < 1e-4 * max(1.0, float(np.abs(ref).max()))
    with pytest.raises(GenaiError, match="sliding-window cache"):
        empty_past_feeds(sess.get_inputs(), ids, head_size_of(windowed), None)


def test_flatten_rope_leaves_other_configs_alone() -> None:
    cfg = SimpleNamespace(rope_parameters={"rope_type": "default", "rope_theta": 500000.0})
    flatten_rope(cfg)
    assert cfg.rope_parameters == {"rope_type": "default", "rope_theta": 500000.0}
    assert not hasattr(cfg, "rope_local_base_freq")
