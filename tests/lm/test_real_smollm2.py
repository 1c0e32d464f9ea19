"""SmolLM2-135M-Instruct from its Q4_1 GGUF (the real-model corpus): opens as a float32 HF folder with the true
parameter count, the note of its GGUF types and its 30 decoder blocks grouped, and is a working language model.

The dequantized folder lands in the workspace's GGUF cache (built once, ~20-40 s; later opens are instant).
"""
from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from tests.realmodels.fetch import BY_ID, DATASET_BY_ID, model_path

SMOL = "smollm2-135m-q4_1"
TEXT = "pydoc-sentences"
PARAMS = 134_515_008   # the GGUF's tensors; lm_head is tied to the embeddings and counted once


@pytest.fixture(scope="module")
def smol() -> Any:
    from slimline.core.models import open_model

    return open_model(model_path(BY_ID[SMOL]))


@pytest.mark.real(SMOL)
def test_opens_with_note_true_param_count_and_grouped_blocks(smol: Any) -> None:
    from slimline.core.layer_groups import group_blocks
    from slimline.core.stats import layer_inventory

    assert smol.format == "hf" and smol.param_count == PARAMS and "tied" not in smol.meta
    assert "the file held types Q4_1 (210 tensors), F32 (61), Q8_0 (1)" in smol.notes[0]
    assert smol.meta["tokenizer"] is True and smol.outputs[0].shape[-1] == 49152
    rows = layer_inventory(smol)
    assert sum(r.params for r in rows) == PARAMS and len(rows) == 272
    (g,) = group_blocks(rows)
    assert g.title == "model.layers.0 … 29" and g.blocks == 30 and len(g.members) == 9


@pytest.mark.real(SMOL)
def test_cli_inspect_prints_note_groups_and_params(smol: Any) -> None:
    from slimline.core.cli import run

    out = io.StringIO()
    with redirect_stdout(out):
        assert run(["inspect", str(model_path(BY_ID[SMOL])), "--no-stats"]) == 0
    text = out.getvalue()
    assert "params    134,515,008" in text and "note      dequantized from GGUF SmolLM2-135M-Instruct.Q4_1.gguf" in text
    assert "model.layers.0 … 29" in text and "30 blocks × 9 tensors" in text


@pytest.mark.real(SMOL, TEXT)
def test_dequantized_model_is_a_working_language_model(smol: Any) -> None:
    """Perplexity on real English prose: ~31 here (3 windows × 128 tokens); random weights would give ~49k."""
    import torch

    from slimline.core.lm.score import perplexity, summarize_window
    from slimline.core.lm.text import load_tokenizer, text_windows
    from slimline.core.models import load_torch_runnable

    torch.set_num_threads(min(2, torch.get_num_threads()))
    w = text_windows(model_path(DATASET_BY_ID[TEXT]), load_tokenizer(smol.path), length=128, count=3)
    assert w.bos_id is None   # SmolLM2 does not start texts with a BOS
    with torch.no_grad():
        logits = load_torch_runnable(smol)(input_ids=torch.from_numpy(w.ids)).logits.numpy()
    ppl = perplexity([summarize_window(logits[i], w.ids[i], w.scored[i]) for i in range(w.count)])
    assert 10 < ppl.value < 60, ppl
    assert Path(smol.path, "slimline_source.json").is_file()
