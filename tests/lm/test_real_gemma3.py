"""Gemma 3 270M from its "Q4_K_M" GGUF (the real-model corpus' second LM): opens with the true parameter count,
the note of its GGUF types and its 18 decoder blocks grouped; its genai fp32 export scores the same perplexity as
torch on the same real-text windows.

Opening dequantizes into the workspace's GGUF cache once (`make realmodels` does it; ~70 s on 2 cores, 1.07 GB),
later opens are instant. The genai build is ~15-40 s; the windows are few and short to keep this under a minute.
"""
from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.realmodels.fetch import BY_ID, DATASET_BY_ID, model_path

GEMMA = "gemma3-270m-q4_k_m"
TEXT = "pydoc-sentences"
PARAMS = 268_098_176   # the GGUF's tensors; lm_head is tied to the 262144 x 640 embedding and counted once
TYPES = "the file held types F32 (109 tensors), Q5_0 (81), Q4_K (27), Q8_0 (10), Q6_K (9)"


@pytest.fixture(scope="module")
def gemma() -> Any:
    from slimline.core.models import open_model

    return open_model(model_path(BY_ID[GEMMA]))


@pytest.mark.real(GEMMA)
def test_opens_with_note_true_param_count_and_grouped_blocks(gemma: Any) -> None:
    from slimline.core.layer_groups import group_blocks
    from slimline.core.stats import layer_inventory

    assert gemma.format == "hf" and gemma.param_count == PARAMS
    assert TYPES in gemma.notes[0] and "dequantized from GGUF gemma-3-270m-q4_k_m.gguf" in gemma.notes[0]
    assert gemma.meta["tokenizer"] is True and gemma.outputs[0].shape[-1] == 262144
    rows = layer_inventory(gemma)
    assert sum(r.params for r in rows) == PARAMS and len(rows) == 236
    embed = next(r for r in rows if r.name == "model.embed_tokens.weight")
    assert embed.params == 262144 * 640   # 63 % of the model
    (g,) = group_blocks(rows)
    assert g.title == "model.layers.0 … 17" and g.blocks == 18 and len(g.members) == 13


@pytest.mark.real(GEMMA)
def test_cli_inspect_prints_note_groups_and_params(gemma: Any) -> None:
    from slimline.core.cli import run

    out = io.StringIO()
    with redirect_stdout(out):
        assert run(["inspect", str(model_path(BY_ID[GEMMA])), "--no-stats"]) == 0
    text = out.getvalue()
    assert "params    268,098,176" in text and "note      dequantized from GGUF gemma-3-270m-q4_k_m.gguf" in text
    assert "model.layers.0 … 17" in text and "18 blocks × 13 tensors" in text


@pytest.mark.real(GEMMA, TEXT)
def test_genai_export_perplexity_equals_torch(gemma: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """3 windows × 64 tokens (BOS first, as Gemma expects): torch ~30-45 here; a broken model would be ~262k."""
    import torch

    from slimline.core.lm.genai import build_genai_model, empty_past_feeds, head_size_of, sliding_window_of
    from slimline.core.lm.score import perplexity, summarize_window
    from slimline.core.lm.text import load_tokenizer, text_windows
    from slimline.core.models import load_torch_runnable
    from slimline.core.runtime import ort_inference_session

    torch.set_num_threads(min(2, torch.get_num_threads()))
    w = text_windows(model_path(DATASET_BY_ID[TEXT]), load_tokenizer(gemma.path), length=64, count=3)
    assert w.bos_id == 2 and (w.ids[:, 0] == 2).all()
    with torch.no_grad():
        ref = load_torch_runnable(gemma)(input_ids=torch.from_numpy(w.ids)).logits.numpy()
    ppl_torch = perplexity([summarize_window(ref[i], w.ids[i], w.scored[i]) for i in range(w.count)])
    del ref
    assert 10 < ppl_torch.value < 100, ppl_torch

    folder = build_genai_model(Path(gemma.path), tmp_path_factory.mktemp("gemma3") / "genai-fp32", "fp32")
    sess = ort_inference_session(folder / "model.onnx", threads=2)
    head, window = head_size_of(folder), sliding_window_of(folder)
    got = [sess.run(["logits"], empty_past_feeds(sess.get_inputs(), w.ids[i:i + 1], head, window))[0][0]
           for i in range(w.count)]
    ppl_onnx = perplexity([summarize_window(np.asarray(got[i]), w.ids[i], w.scored[i]) for i in range(w.count)])
    assert ppl_onnx.tokens == ppl_torch.tokens == 3 * 64
    assert ppl_onnx.value == pytest.approx(ppl_torch.value, rel=1e-3)
