"""GGUF files open as a cached float32 HF folder equal to the model they were written from, with a note of their
types; files transformers cannot load are refused before any work, naming the file, the type or architecture and
what to do; nothing half-written is ever left in the cache."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

from slimline.core.errors import ModelLoadError
from slimline.core.models import detect_format, load_torch_runnable, open_model
from tests.core import modelfiles as mf
from tests.lm.gguf_files import write_llama_gguf

MIXED = {"blk.0.attn_q.weight": "Q8_0", "blk.1.ffn_up.weight": "F16"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gguf")
    hf = mf.hf_llama(root / "llama", train_steps=30)
    return {"hf": hf, "mixed": write_llama_gguf(hf, root / "mixed.gguf", types=MIXED),
            "f32": write_llama_gguf(hf, root / "f32.gguf"), "root": root}


@pytest.fixture(autouse=True)
def gguf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "gguf-cache"
    monkeypatch.setenv("SLIMLINE_GGUF_CACHE", str(cache))
    monkeypatch.delenv("SLIMLINE_AVAILABLE_MEMORY", raising=False)
    return cache


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=ids).logits.numpy()


def test_mixed_gguf_opens_as_the_float_model_it_was_written_from(tiny: dict[str, Path], gguf_cache: Path) -> None:
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert detect_format(tiny["mixed"]) == "gguf"
    h = open_model(tiny["mixed"])
    orig = AutoModelForCausalLM.from_pretrained(str(tiny["hf"])).eval()
    assert h.format == "hf" and h.meta["auto_class"] == "AutoModelForCausalLM"
    assert h.param_count == sum(p.numel() for p in orig.parameters())   # tied embeddings once
    assert Path(h.path).parent == gguf_cache and h.meta["gguf_file"] == str(tiny["mixed"])
    note = h.notes[0]
    assert "dequantized from GGUF mixed.gguf" in note and "F32 (18 tensors), F16 (1), Q8_0 (1)" in note
    assert "already quantized (Q8_0)" in note
    cfg = json.loads((Path(h.path) / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["tie_word_embeddings"] is True
    got, want = load_file(str(Path(h.path) / "model.safetensors")), load_file(str(tiny["hf"] / "model.safetensors"))
    assert all(v.dtype == np.float32 for v in got.values()) and set(got) == set(want)
    up = "model.layers.1.mlp.up_proj.weight"   # F16 in the file: exactly the fp16-rounded original
    np.testing.assert_array_equal(got[up], want[up].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(got["model.layers.1.self_attn.q_proj.weight"],   # F32 and permuted back
                                  want["model.layers.1.self_attn.q_proj.weight"])
    q = "model.layers.0.self_attn.q_proj.weight"   # Q8_0: blocks of 32 with one fp16 scale d, error ~ d / 2
    d = np.abs(want[q]).reshape(-1, 32).max(axis=1, keepdims=True) / 127
    err = np.abs(got[q] - want[q]).reshape(-1, 32)
    assert 0 < err.max() and (err <= d * 0.6).all()
    ids = torch.randint(0, h.outputs[0].shape[-1], (2, 24), generator=torch.Generator().manual_seed(0))
    a, b = _logits(orig, ids), _logits(load_torch_runnable(h), ids)
    assert np.abs(a - b).max() < 2e-3 * np.abs(a).max()
    text = (tiny["root"] / "llama-corpus.txt").read_text()[:3000]
    t_orig, t_gguf = AutoTokenizer.from_pretrained(str(tiny["hf"])), AutoTokenizer.from_pretrained(h.path)
    assert t_gguf(text)["input_ids"] == t_orig(text)["input_ids"]   # the GGUF's tokenizer, BOS included


def test_f32_gguf_is_exact_and_second_open_reuses_the_cache(tiny: dict[str, Path], gguf_cache: Path) -> None:
    from transformers import AutoModelForCausalLM

    h = open_model(tiny["f32"])
    assert "the file held types F32 (20 tensors); the file held float weights only" in h.notes[0]
    weights = Path(h.path) / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = open_model(tiny["f32"])
    assert again.path == h.path and weights.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in gguf_cache.iterdir()) == [Path(h.path).name]   # no temp folders left
    orig = AutoModelForCausalLM.from_pretrained(str(tiny["hf"])).eval()
    ids = torch.arange(30).reshape(1, 30)
    np.testing.assert_allclose(_logits(load_torch_runnable(again), ids), _logits(orig, ids), atol=1e-5)


def test_undequantizable_tensor_type_is_refused_naming_the_type(tiny: dict[str, Path], gguf_cache: Path) -> None:
    bad = write_llama_gguf(tiny["hf"], tiny["root"] / "f64.gguf",
                           extra={"blk.0.extra.weight": np.ones((4, 4), dtype=np.float64)})
    with pytest.raises(ModelLoadError) as err:
        open_model(bad)
    e = err.value
    assert e.subject == str(bad) and "cannot be dequantized: F64 (1 tensor)" in e.message
    assert "llama.cpp" in e.hint and "F16" in e.hint
    assert not gguf_cache.exists() or not any(gguf_cache.iterdir())


def test_unsupported_architecture_is_refused_naming_it(tiny: dict[str, Path], gguf_cache: Path) -> None:
    odd = write_llama_gguf(tiny["hf"], tiny["root"] / "rwkv.gguf", arch="rwkv6")
    with pytest.raises(ModelLoadError) as err:
        open_model(odd)
    assert "'rwkv6' is not supported" in err.value.message and "llama" in err.value.message
    assert "original Hugging Face folder" in err.value.hint and err.value.subject == str(odd)


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_corrupt_gguf_is_a_clear_error(tiny: dict[str, Path], gguf_cache: Path, tmp_path: Path,
                                       damage: str) -> None:
    data = tiny["f32"].read_bytes()
    broken = tmp_path / "broken.gguf"
    garbled = data[:8] + np.random.default_rng(0).bytes(4096) + data[4104:]
    broken.write_bytes(data[: len(data) // 3] if damage == "truncate" else garbled)
    with pytest.raises(ModelLoadError) as err:
        open_model(broken)
    assert err.value.subject == str(broken)
    assert "corrupt" in err.value.message or "cannot be dequantized" in err.value.message, err.value.message
    assert err.value.hint and "Error" not in err.value.message
    assert not gguf_cache.exists() or not any(gguf_cache.iterdir())


def test_not_enough_memory_is_refused_before_dequantizing(tiny: dict[str, Path], gguf_cache: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIMLINE_AVAILABLE_MEMORY", "100000")
    with pytest.raises(ModelLoadError) as err:
        open_model(tiny["mixed"])
    assert "dequantizing this GGUF needs about" in err.value.message and "float32 ×2 copies" in err.value.message
    assert "only 0 MB of memory is available" in err.value.message and "close other programs" in err.value.hint
    assert not gguf_cache.exists() or not any(gguf_cache.iterdir())


def test_a_failed_build_leaves_nothing_in_the_cache(tiny: dict[str, Path], gguf_cache: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from slimline.core.models import gguf

    def half_then_crash(path: Path, info: gguf.GGUFInfo, out: Path, *_: object) -> None:
        (out / "model.safetensors").write_bytes(b"half")
        raise ModelLoadError("simulated failure half-way", subject=str(path))

    monkeypatch.setattr(gguf, "_build", half_then_crash)
    with pytest.raises(ModelLoadError, match="half-way"):
        open_model(tiny["mixed"])
    assert not any(gguf_cache.iterdir())


def test_cli_inspect_prints_the_note_and_the_grouped_blocks(tiny: dict[str, Path]) -> None:
    from slimline.core.cli import run

    out = io.StringIO()
    with redirect_stdout(out):
        assert run(["inspect", str(tiny["mixed"])]) == 0
    text = out.getvalue()
    assert "note      dequantized from GGUF mixed.gguf; the file held types F32 (18 tensors), F16 (1), Q8_0 (1)" in text
    assert "model.layers.0 … 1" in text and "2 blocks × 9 tensors" in text
    assert "params    106,816" in text and "memory    ~" in text
    out = io.StringIO()
    with redirect_stdout(out):
        assert run(["inspect", str(tiny["mixed"]), "--json"]) == 0
    doc = json.loads(out.getvalue())
    assert doc["model"]["notes"] and doc["groups"][0]["title"] == "model.layers.0 … 1"
    assert doc["groups"][0]["indices"] == [0, 1] and len(doc["layers"]) == 20


def test_without_transformers_the_gguf_says_what_to_install(tiny: dict[str, Path],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from slimline.core.models import gguf

    monkeypatch.setattr(gguf, "transformers_available", lambda: False)
    with pytest.raises(ModelLoadError) as err:
        open_model(tiny["mixed"])
    assert "needs the 'transformers' package" in err.value.message and "slimline[llm]" in err.value.hint
