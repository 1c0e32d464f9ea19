"""The genai folder: built from an HF folder, runs in onnxruntime with an empty past and in the generate API."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from slimline.core.lm.genai import (
    GenaiError,
    build_genai_model,
    copy_companions,
    empty_past_feeds,
    genai_folder_of,
    genai_generate,
    genai_model,
    genai_onnx_name,
    head_size_of,
)
from slimline.core.runtime import ort_inference_session
from tests.core import modelfiles as mf


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mf.hf_llama(tmp_path_factory.mktemp("g") / "llama", train_steps=40)


@pytest.fixture(scope="module")
def genai32(llama: Path) -> Path:
    return build_genai_model(llama, llama.parent / "genai-fp32", "fp32")


def test_builder_output_matches_torch_with_an_empty_past(llama: Path, genai32: Path) -> None:
    from transformers import AutoModelForCausalLM

    assert genai_folder_of(genai32 / "model.onnx") == genai32 and genai_onnx_name(genai32) == "model.onnx"
    ids = np.array([[1, 40, 41, 42, 43, 44, 45, 46, 47, 48]], dtype=np.int64)
    sess = ort_inference_session(genai32 / "model.onnx", threads=1)
    got = sess.run(["logits"], empty_past_feeds(sess.get_inputs(), ids, head_size_of(genai32)))[0]
    ref_model = AutoModelForCausalLM.from_pretrained(str(llama)).eval()
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(ids)).logits.numpy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-4 * max(1.0, float(np.abs(ref).max()))


def test_generate_api_greedy_equals_torch_greedy(llama: Path, genai32: Path) -> None:
    from transformers import AutoModelForCausalLM

    prompt = [1, 40, 41, 42, 43]
    gen = genai_generate(genai_model(genai32, threads=1), prompt, 12, threads=1)
    ref_model = AutoModelForCausalLM.from_pretrained(str(llama)).eval()
    with torch.no_grad():
        ref = ref_model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    n = len(gen.tokens)
    assert 0 < n <= 12 and gen.tokens == ref[:n]
    assert gen.prefill_ms > 0 and gen.decode_tokens_per_s > 0 and "KV cache" in gen.engine


def test_companions_follow_a_renamed_onnx(genai32: Path, tmp_path: Path) -> None:
    copied = copy_companions(genai32 / "model.onnx", tmp_path, onnx_name="model_int4.onnx")
    assert "genai_config.json" in copied and "tokenizer.json" in copied
    assert genai_onnx_name(tmp_path) == "model_int4.onnx"


def test_builder_failure_is_a_message_and_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"architectures": ["NoSuchForCausalLM"], "model_type": "nosuch"}')
    with pytest.raises(GenaiError) as err:
        build_genai_model(bad, tmp_path / "out", "fp32", timeout_s=300)
    assert "model builder failed on bad" in str(err.value)
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["bad"]
