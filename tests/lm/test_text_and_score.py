"""Text windows and LM scoring: perplexity equals the plain torch loss on the same windows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from slimline.core.errors import DataError
from slimline.core.lm.score import compare, log_probs_of, perplexity, summarize_window
from slimline.core.lm.text import load_tokenizer, starts_with_bos, text_windows
from tests.core import modelfiles as mf


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mf.hf_llama(tmp_path_factory.mktemp("lm") / "llama", train_steps=30)


@pytest.fixture(scope="module")
def corpus(tiny_llama: Path) -> Path:
    return tiny_llama.parent / "llama-corpus.txt"


def _logits(folder: Path, ids: np.ndarray) -> np.ndarray:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids)).logits.numpy()


def test_windows_prepend_bos_and_score_every_text_token(tiny_llama: Path, corpus: Path) -> None:
    tok = load_tokenizer(tiny_llama)
    assert starts_with_bos(tok) == 1
    w = text_windows(corpus, tok, length=32, count=5)
    assert w.ids.shape == (5, 33) and (w.ids[:, 0] == 1).all()
    assert w.scored_tokens == 5 * 32 and not w.scored[:, 0].any()
    assert "5 windows × 32 tokens, BOS prepended, 160 tokens scored" in w.describe()


def test_overlapping_windows_score_each_token_once(tiny_llama: Path, corpus: Path) -> None:
    w = text_windows(corpus, load_tokenizer(tiny_llama), length=32, count=4, stride=8)
    assert w.scored[0].sum() == 32 and all(w.scored[i].sum() == 8 for i in range(1, 4))


def test_perplexity_matches_torch_loss(tiny_llama: Path, corpus: Path) -> None:
    """The same windows through HF's own loss (labels=ids, every position after the first)."""
    from transformers import AutoModelForCausalLM

    w = text_windows(corpus, load_tokenizer(tiny_llama), length=48, count=6)
    logits = _logits(tiny_llama, w.ids)
    ppl = perplexity([summarize_window(lg, ids, sc) for lg, ids, sc in zip(logits, w.ids, w.scored)])
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()
    with torch.no_grad():
        ids = torch.from_numpy(w.ids)
        loss = model(input_ids=ids, labels=ids).loss.item()  # mean over all 6 × 48 targets
    assert ppl.tokens == 6 * 48
    assert ppl.value == pytest.approx(np.exp(loss), rel=1e-4)
    assert ppl.low <= ppl.value <= ppl.high


def test_compare_is_zero_for_the_same_model_and_grows_with_noise(tiny_llama: Path, corpus: Path) -> None:
    w = text_windows(corpus, load_tokenizer(tiny_llama), length=32, count=4)
    logits = _logits(tiny_llama, w.ids)
    ref = [summarize_window(lg, i, s) for lg, i, s in zip(logits, w.ids, w.scored)]
    same = compare(ref, ref, [log_probs_of(lg, s, r.top_ids) for lg, s, r in zip(logits, w.scored, ref)])
    assert same.increase == pytest.approx(0.0, abs=1e-12) and same.agreement == 1.0
    assert same.kl_topk == pytest.approx(0.0, abs=1e-9)
    noisy = logits + np.random.default_rng(0).normal(0, 2.0, logits.shape).astype(np.float32)
    got = [summarize_window(lg, i, s) for lg, i, s in zip(noisy, w.ids, w.scored)]
    worse = compare(ref, got, [log_probs_of(lg, s, r.top_ids) for lg, s, r in zip(noisy, w.scored, ref)])
    assert worse.increase > 0.05 and worse.agreement < 0.9 and worse.kl_topk > 0.05
    assert worse.increase_low <= worse.increase <= worse.increase_high


def test_short_text_is_refused_with_the_file_named(tiny_llama: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("Only a few words here.", encoding="utf-8")
    with pytest.raises(DataError) as err:
        text_windows(short, load_tokenizer(tiny_llama), length=128)
    assert "shorter than one window of 128" in str(err.value) and "short.txt" in str(err.value.subject)


def test_missing_tokenizer_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_tokenizer(tmp_path)
    assert "no usable tokenizer" in str(err.value)


def test_step_windows_on_the_evaluation_text_start_after_the_scored_tokens(tiny_llama: Path, corpus: Path) -> None:
    from types import SimpleNamespace

    from slimline.core.lm.text import evaluation_span
    from slimline.core.pipeline import LMSettings
    from slimline.plugins._shared.lm import TextSource, cut_windows

    tok = load_tokenizer(tiny_llama)
    settings = LMSettings(window_length=32, window_count=3, stride=16)
    assert evaluation_span(settings) == 2 * 16 + 32
    evaluated = text_windows(corpus, tok, length=32, count=3, stride=16)
    ctx = SimpleNamespace(evaluation=SimpleNamespace(lm=settings))
    src = TextSource(path=corpus, role="eval", same_as_eval=True)
    cal = cut_windows(src, tok, ctx, length=32, count=2)  # type: ignore[arg-type]
    assert not src.overlaps_eval
    stream = tok(corpus.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
    assert list(cal.ids[0, 1:]) == stream[64:96]                    # the first token the evaluation never read
    assert not {tuple(r) for r in cal.ids} & {tuple(r) for r in evaluated.ids}
    short = LMSettings(window_length=32, window_count=100_000)        # scores the whole text: nothing left after
    src2 = TextSource(path=corpus, role="eval", same_as_eval=True)
    again = cut_windows(src2, tok, SimpleNamespace(evaluation=SimpleNamespace(lm=short)),  # type: ignore[arg-type]
                        length=32, count=2)
    assert src2.overlaps_eval and list(again.ids[0, 1:]) == stream[:32]
