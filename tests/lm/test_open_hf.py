"""Hugging Face causal-LM folders of the main families open, count tied embeddings once, run like transformers
runs them, group their decoder blocks, and say clearly what is missing (tokenizer, memory)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from slimline.core.errors import DataError, ModelLoadError
from slimline.core.layer_groups import group_blocks
from slimline.core.lm.text import load_tokenizer
from slimline.core.models import load_torch_runnable, open_model
from slimline.core.models.memory import activation_bytes, estimate
from slimline.core.stats import layer_inventory
from tests.core import modelfiles as mf

SMALL = {"vocab_size": 96, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "max_position_embeddings": 64}
# family -> (config class, extra config, where the decoder blocks live)
FAMILIES: dict[str, tuple[str, dict[str, Any], str]] = {
    "llama": ("LlamaConfig", {**SMALL, "num_key_value_heads": 2, "tie_word_embeddings": True}, "model.layers"),
    "qwen2": ("Qwen2Config", {**SMALL, "num_key_value_heads": 2, "tie_word_embeddings": True}, "model.layers"),
    "qwen3": ("Qwen3Config", {**SMALL, "num_key_value_heads": 2, "head_dim": 8}, "model.layers"),
    "gemma": ("GemmaConfig", {**SMALL, "num_key_value_heads": 1, "head_dim": 8}, "model.layers"),
    "gemma3": ("Gemma3TextConfig", {**SMALL, "num_key_value_heads": 1, "head_dim": 8}, "model.layers"),
    "phi": ("PhiConfig", {**SMALL, "tie_word_embeddings": False}, "model.layers"),
    "phi3": ("Phi3Config", {**SMALL, "num_key_value_heads": 4, "pad_token_id": 0}, "model.layers"),
    "gpt2": ("GPT2Config", {"vocab_size": 96, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64},
             "transformer.h"),
}


def _save(folder: Path, family: str, **override: Any) -> torch.nn.Module:
    import transformers

    torch.manual_seed(0)
    shard = override.pop("_shard", False)
    cls, kwargs, _ = FAMILIES[family]
    cfg = getattr(transformers, cls)(**{**kwargs, **override})
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    model.save_pretrained(str(folder), **({"max_shard_size": "20KB"} if shard else {}))
    return model


def _unique_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())   # parameters() yields a tied tensor once


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=ids).logits.numpy()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_opens_counts_runs_and_groups(family: str, tmp_path: Path) -> None:
    model = _save(tmp_path / family, family)
    h = open_model(tmp_path / family)
    assert h.format == "hf" and h.family == "torch" and h.meta["auto_class"] == "AutoModelForCausalLM"
    assert h.outputs[0].name == "logits" and h.outputs[0].shape[-1] == 96
    assert h.param_count == _unique_params(model), (h.param_count, _unique_params(model))
    ids = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(_logits(load_torch_runnable(h), ids), _logits(model, ids), atol=1e-5)
    groups = group_blocks(layer_inventory(h))
    assert [(g.prefix, g.indices) for g in groups] == [(FAMILIES[family][2], [0, 1])]
    assert h.meta["tokenizer"] is False and "no tokenizer files" in h.notes[0]


def test_sharded_folder_opens_with_every_shard(tmp_path: Path) -> None:
    model = _save(tmp_path / "sharded", "llama", _shard=True)
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 3
    h = open_model(tmp_path / "sharded")
    assert h.param_count == _unique_params(model)
    assert sum(1 for f in h.files if f.endswith(".safetensors")) == len(set(index["weight_map"].values()))
    ids = torch.arange(12).reshape(1, 12)
    np.testing.assert_allclose(_logits(load_torch_runnable(h), ids), _logits(model, ids), atol=1e-5)


def test_tied_weights_stored_twice_are_counted_once(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = _save(tmp_path / "tied", "llama")
    state = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
    assert "lm_head.weight" in state   # the module has it; save_pretrained left it out of the file
    save_file(state, str(tmp_path / "tied" / "model.safetensors"), metadata={"format": "pt"})
    h = open_model(tmp_path / "tied")
    assert h.meta["tied"] == ["lm_head.weight"] and h.param_count == _unique_params(model)
    untied = _save(tmp_path / "untied", "llama", tie_word_embeddings=False)
    hu = open_model(tmp_path / "untied")
    assert "tied" not in hu.meta and hu.param_count == _unique_params(untied) == h.param_count + 96 * 32


def test_folder_without_tokenizer_opens_but_text_data_says_what_is_missing(tmp_path: Path) -> None:
    _save(tmp_path / "bare", "llama")
    h = open_model(tmp_path / "bare")
    assert h.capabilities.run and "text data needs its tokenizer" in h.notes[0]
    with pytest.raises(DataError) as err:
        load_tokenizer(h.path)
    e = err.value
    assert str(tmp_path / "bare") in e.message
    assert "tokenizer.json" in e.message and "tokenizer_config.json" in e.message
    assert "copy the model's tokenizer files" in e.hint
    with_tok = mf.hf_llama(tmp_path / "with-tok")
    assert open_model(with_tok).meta["tokenizer"] is True and not open_model(with_tok).notes
    (with_tok / "tokenizer.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot be loaded"):
        load_tokenizer(with_tok)


def test_memory_estimate_from_the_config(tmp_path: Path) -> None:
    cfg = {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
           "num_attention_heads": 9, "num_key_value_heads": 3}
    per_token = 2 * 49152 + 2 * 3 * 64 * 30 + 4 * 576 + 3 * 1536
    assert activation_bytes(cfg) == 4 * (128 * per_token + 2 * 9 * 128 * 128)
    est = estimate(cfg, 134_515_008)
    assert est.weights == 4 * 134_515_008 and est.total == est.weights + est.activations
    assert est.describe().startswith("~0.60 GB (weights 0.54 GB float32 + activations 61 MB for 1×128 tokens)")
    half = estimate({**cfg, "torch_dtype": "bfloat16"}, 1000)
    assert half.dtype == "bfloat16" and half.weights == 2000
    assert activation_bytes({"image_size": 224}) == 0


def test_model_that_will_not_fit_is_refused_before_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _save(tmp_path / "m", "llama")
    h = open_model(tmp_path / "m")
    assert h.meta["memory_bytes"] > h.param_count * 4
    monkeypatch.setenv("SLIMLINE_AVAILABLE_MEMORY", str(h.param_count * 4 // 2))
    assert open_model(tmp_path / "m").param_count == h.param_count   # inspecting needs no memory
    with pytest.raises(ModelLoadError) as err:
        load_torch_runnable(h)
    e = err.value
    assert e.subject == str(tmp_path / "m") and "loading this model needs about" in e.message
    assert "weights" in e.message and "of memory is available" in e.message
    assert "close other programs" in e.hint and "smaller model" in e.hint
