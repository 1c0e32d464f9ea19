"""Convert to ONNX on causal LMs: the genai builder by default, the logits export as the alternative/fallback."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from slimline.core.data import DataBundle, load_dataset
from slimline.core.errors import StepFailed
from slimline.core.models import open_model
from slimline.core.plugin import StepContext
from slimline.plugins.convert import ConvertToOnnx
from tests.core import modelfiles as mf

P = ConvertToOnnx.Params


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mf.hf_llama(tmp_path_factory.mktemp("cl") / "llama", train_steps=40)


@pytest.fixture(scope="module")
def corpus(llama: Path) -> Path:
    return llama.parent / "llama-corpus.txt"     # written by hf_llama: real English text


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mf.hf_causal_lm(tmp_path_factory.mktemp("cg") / "gpt2")


@pytest.fixture(scope="module")
def converted(llama: Path, corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    handle = open_model(llama)
    data = DataBundle(eval=load_dataset(corpus, handle))
    ctx = StepContext(work_dir=tmp_path_factory.mktemp("conv"), data=data, threads=1)
    return ConvertToOnnx().run(handle, P(), ctx)


def test_default_is_the_genai_folder_checked_against_torch(converted) -> None:
    out = converted.model
    folder = Path(out.path).parent
    assert Path(out.path).name == "model.onnx" and (folder / "genai_config.json").is_file()
    assert (folder / "tokenizer.json").is_file()
    # the rest of Slimline sees a plain LM: ids and mask in, logits out, sequence length symbolic
    assert [s.name for s in out.inputs] == ["input_ids", "attention_mask"]
    assert [s.name for s in out.outputs] == ["logits"]
    assert out.inputs[0].shape == ["batch_size", "sequence_length"] == out.inputs[1].shape
    assert out.dim_defaults == {"batch_size": 1, "sequence_length": 128}
    assert out.meta["kv_cache"]["head_size"] == 16 and out.meta["kv_cache"]["genai_folder"]
    notes = "\n".join(converted.notes)
    assert "model builder: LlamaForCausalLM → fp32 KV-cache ONNX" in notes
    assert "llama-corpus.txt" in notes and "next-token agreement 1.0000" in notes
    assert "greedy 32/32 tokens identical to the source on 2 prompts (onnxruntime-genai" in notes
    assert "KV-cache generation = the same ONNX without cache on 32/32 tokens" in notes
    assert converted.metrics["parity_max_rel"] < 1e-3
    assert converted.metrics["genai_decode_tokens_per_s"] > 0


def test_the_genai_handle_runs_in_slimline_like_any_onnx_lm(converted, llama: Path) -> None:
    """Full-sequence logits through the runtime session (empty past filled in) equal torch's."""
    import torch
    from transformers import AutoModelForCausalLM

    from slimline.core.runtime import open_session

    session = open_session(converted.model, threads=1)
    ids = np.array([[1, 60, 61, 62, 63, 64, 65]], dtype=np.int64)
    got = session.run({"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(str(llama)).eval()(torch.from_numpy(ids)).logits.numpy()
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4
    folder = Path(converted.model.path).parent
    assert open_model(folder).path == converted.model.path   # the folder opens as its decoder
    import onnx

    past = onnx.load(converted.model.path, load_external_data=False).graph.input[2]
    assert past.name.startswith("past_key_values") and past.type.tensor_type.shape.dim[3].dim_value == 16


def test_logits_method_exports_a_plain_lm(llama: Path, tmp_path: Path) -> None:
    out = ConvertToOnnx().run(open_model(llama), P(lm_method="logits", lm_parity_windows=2, lm_new_tokens=4),
                              StepContext(work_dir=tmp_path, threads=1))
    assert "kv_cache" not in out.model.meta and not (Path(out.model.path).parent / "genai_config.json").exists()
    assert [s.shape for s in out.model.inputs] == [["batch", "sequence"], ["batch", "sequence"]]
    notes = "\n".join(out.notes)
    assert "use_cache=False" in notes and "RANDOM: smoke check only" in notes
    assert "greedy 8/8 tokens identical to the source on 2 prompts (greedy loop" in notes


def test_gpt2_falls_back_to_the_logits_export_with_a_note(gpt2: Path, tmp_path: Path) -> None:
    out = ConvertToOnnx().run(open_model(gpt2), P(lm_parity_windows=2, lm_new_tokens=4),
                              StepContext(work_dir=tmp_path, threads=1))
    assert "does not support GPT2LMHeadModel" in out.notes[0] and "logits-only ONNX instead" in out.notes[0]
    assert any("GPT2LMHeadModel: no KV-cache ONNX" in w for w in out.warnings)
    assert "kv_cache" not in out.model.meta and Path(out.model.path).is_file()


def test_a_converted_lm_that_differs_from_torch_fails_and_leaves_nothing(
        llama: Path, converted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The builder's folder of *another* model of the same shape: logits and greedy tokens disagree."""
    import slimline.core.lm.convert as conv

    other = mf.hf_llama(tmp_path / "other", seed=1, train_steps=0)
    good = Path(converted.model.path).parent

    def wrong_model(hf_dir: Path, out_dir: Path, precision: str, **_: object) -> Path:
        shutil.copytree(good, out_dir)
        return out_dir

    monkeypatch.setattr(conv, "build_genai_folder", wrong_model)
    with pytest.raises(StepFailed) as err:
        ConvertToOnnx().run(open_model(other), P(lm_parity_windows=2, lm_new_tokens=4),
                            StepContext(work_dir=tmp_path / "w", threads=1))
    assert "does not match torch" in err.value.message and "logits differ" in err.value.message
    assert not (tmp_path / "w" / "onnx").exists()


def test_export_failure_shows_the_root_reason_first(llama: Path, tmp_path: Path) -> None:
    """What the issue saw: the raw HF model (cache object in its output) fails torch.export; the reason leads."""
    import torch
    from transformers import AutoModelForCausalLM

    from slimline.core.onnx_export import OnnxExportFailed, export_torch_to_onnx

    model = AutoModelForCausalLM.from_pretrained(str(llama)).eval()
    ids = torch.ones((2, 8), dtype=torch.int64)
    with pytest.raises(OnnxExportFailed) as err:
        export_torch_to_onnx(model, {"input_ids": ids}, tmp_path / "m.onnx", input_names=["input_ids"])
    first = err.value.message.splitlines()[0]
    assert "Failed to export the model with torch.export: RuntimeError: Found <class" in first
    assert "DynamicCache" in first and "\x1b[" not in err.value.message and "Next steps" not in err.value.message
    assert list(tmp_path.iterdir()) == []


def test_fp16_that_the_cpu_runtime_cannot_run_is_a_clear_failure(llama: Path, tmp_path: Path) -> None:
    """onnxruntime-genai 0.18's CPU provider fails on the builder's fp16 model: said so, nothing left behind."""
    with pytest.raises(StepFailed) as err:
        ConvertToOnnx().run(open_model(llama), P(lm_precision="fp16", lm_parity_windows=1, lm_new_tokens=2),
                            StepContext(work_dir=tmp_path, threads=1))
    assert "could not be checked: onnxruntime-genai failed while generating" in err.value.message
    assert "GPU execution providers" in err.value.hint and "lm_precision fp32" in err.value.hint
    assert not (tmp_path / "onnx").exists()


def test_cancel_stops_the_model_builder_and_leaves_nothing(llama: Path, tmp_path: Path) -> None:
    import time

    from slimline.core.errors import Cancelled
    from slimline.core.lm.genai import build_genai_model
    from slimline.core.plugin import CancelToken

    token = CancelToken()
    token.cancel()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        build_genai_model(llama, tmp_path / "out", "fp32", cancel=token)
    assert time.monotonic() - t0 < 5 and list(tmp_path.iterdir()) == []


def test_quantize_guardrail_feeds_a_kv_decoder_an_empty_past(converted, corpus: Path) -> None:
    """The quantize steps' own evaluation rows for the genai ONNX: the text's ids, empty past, full mask."""
    from slimline.core.runtime import ort_inference_session
    from slimline.plugins.quantize.evaluate import dataset_feeds, random_feeds

    sess = ort_inference_session(converted.model.path, threads=1)
    ds = load_dataset(corpus, converted.model, tokenizer=Path(converted.model.path).parent)
    feeds, _ = dataset_feeds(ds, sess, 3, "eval")
    past = feeds["past_key_values.0.key"]
    assert past.shape == (3, 2, 0, 16) and feeds["attention_mask"].shape == feeds["input_ids"].shape
    logits = sess.run(["logits"], feeds)[0]
    assert logits.shape[:2] == feeds["input_ids"].shape and np.isfinite(logits).all()
    rnd = random_feeds(sess, converted.model.dim_defaults, 2, 0)
    assert rnd["past_key_values.1.value"].shape[2] == 0 and rnd["attention_mask"].shape == rnd["input_ids"].shape
