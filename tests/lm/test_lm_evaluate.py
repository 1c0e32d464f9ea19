"""LM evaluation pieces: prompt lists, text data errors, flags by interval, divergence, memory, records."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slimline.core.errors import DataError
from slimline.core.lm.evaluate import first_divergence, lm_flags, lm_text_task, text_bundle
from slimline.core.lm.memory import PeakRSS
from slimline.core.lm.prompts import MAX_PROMPTS, load_prompts, prompts_from_text
from slimline.core.lm.report import GenerationReport, GenerationSample, LMReport, VsOriginal
from slimline.core.lm.score import Perplexity
from slimline.core.models import open_model
from slimline.core.pipeline import Budgets, Evaluation, load_pipeline
from slimline.core.results import Measurement, RunRecord, run_from_dict
from tests.lm.helpers import pipeline

FIXTURES = Path(__file__).resolve().parents[1] / "core" / "fixtures"


# --------------------------------------------------------------------------- prompts


@pytest.mark.parametrize(("name", "content", "words"), [
    ("p.json", '{"prompt": "hi"}', "expected a JSON list of strings, got dict"),
    ("p.json", '["fine", 3]', "a list holding int 3"),
    ("p.json", '["unclosed"', "not valid JSON"),
    ("p.txt", "\n  \n", "the prompt list is empty"),
    ("p.csv", "a,b", "unknown prompt list type '.csv'"),
    ("p.txt", "\n".join(f"prompt {i}" for i in range(MAX_PROMPTS + 1)), f"at most {MAX_PROMPTS}"),
])
def test_a_prompt_list_in_the_wrong_format_is_a_data_error_naming_the_file(tmp_path: Path, name: str, content: str,
                                                                           words: str) -> None:
    f = tmp_path / name
    f.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_prompts(f)
    assert words in err.value.message and err.value.subject == str(f)
    assert ".txt" in err.value.hint or "prompt" in err.value.hint


def test_prompt_lists_from_txt_and_json(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("First prompt\n\n  Second one  \n", encoding="utf-8")
    (tmp_path / "p.json").write_text(json.dumps(["Only one", " "]), encoding="utf-8")
    assert load_prompts(tmp_path / "p.txt").texts == ["First prompt", "Second one"]
    got = load_prompts(tmp_path / "p.json")
    assert got.texts == ["Only one"] and got.source == "p.json (1 prompt)"


def test_prompts_from_text_join_wrapped_lines_into_sentences(tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_text("The first sentence is wrapped\nacross two lines. Short.\n\nA second paragraph starts here. "
                 "And a third sentence follows it.", encoding="utf-8")
    p = prompts_from_text(f, 3)
    assert p.texts == ["The first sentence is wrapped across two lines.", "A second paragraph starts here.",
                       "And a third sentence follows it."]
    assert p.source == "first 3 sentences of t.txt"


def test_bad_prompts_or_short_text_fail_before_the_run_naming_the_file(tiny_lm: Path, tiny_text: Path,
                                                                         tmp_path: Path) -> None:
    model = open_model(tiny_lm)
    bad = tmp_path / "prompts.json"
    bad.write_text('{"not": "a list"}', encoding="utf-8")
    ev = Evaluation.model_validate({"lm": {"prompts": str(bad)}})
    with pytest.raises(DataError) as err:
        text_bundle(ev, model, str(tiny_text), None)
    assert err.value.subject == str(bad)
    short = tmp_path / "short.txt"
    short.write_text("Too short for a window.", encoding="utf-8")
    with pytest.raises(DataError) as err:
        text_bundle(Evaluation(), model, str(short), None)
    assert "shorter than one window of 128" in err.value.message and err.value.subject == str(short)
    assert "shorter window length" in err.value.hint


def test_text_data_becomes_windows_only_for_causal_lms(tiny_lm: Path, tiny_text: Path) -> None:
    model = open_model(tiny_lm)
    assert lm_text_task(Evaluation(), model, str(tiny_text)).task == "token_logits"
    assert lm_text_task(Evaluation(), model, "rows.npz") is None
    assert lm_text_task(Evaluation(task="generic"), model, str(tiny_text)) is None
    bundle = text_bundle(pipeline().evaluation, model, str(tiny_text), str(tiny_text))
    assert bundle.text.ids.shape == (6, 33) and bundle.eval.inputs["input_ids"].shape == (6, 33)
    assert bundle.train_text is not None and bundle.train_text.count > 6 and len(bundle.calibration) > 6
    assert (bundle.eval.inputs["attention_mask"] == 1).all()


def test_pipeline_lm_settings_default_and_resolve_the_prompt_file(tmp_path: Path) -> None:
    assert Evaluation().lm.window_length == 128 and Evaluation().lm.window_count == 24
    doc = {"format": "slimline.pipeline", "schema_version": 1, "steps": [],
           "evaluation": {"lm": {"prompts": "prompts.txt", "max_new_tokens": 16}}}
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "pipe.json"
    f.write_text(json.dumps(doc), encoding="utf-8")
    lm = load_pipeline(f).evaluation.lm
    assert lm.prompts == str(tmp_path / "sub" / "prompts.txt") and lm.max_new_tokens == 16
    old = load_pipeline(FIXTURES / "pipeline_v1.json")
    assert old.evaluation.lm.window_count == 24


# --------------------------------------------------------------------------- judging


def _report(increase: float = 0.0, low: float = 0.0, high: float = 0.0, agreement: float = 1.0, kl: float = 0.0,
            tps: tuple[float, float, float] = (10.0, 9.0, 11.0), kv: bool = True, noise: list[str] | None = None,
            original: bool = False) -> LMReport:
    ppl = Perplexity(value=10.0 * (1 + increase), low=9.0, high=11.0, nll=2.3, tokens=100, windows=4)
    gen = GenerationReport(engine="torch generate (KV cache)" if kv else "onnxruntime — no KV cache", kv_cache=kv,
                           threads=2, max_new_tokens=4, prompts_source="p.txt (1 prompt)",
                           samples=[GenerationSample(prompt="a", prompt_tokens=2, tokens=[5, 6], text="xy",
                                                     prefill_ms=1.0, decode_tokens_per_s=tps[0])],
                           prefill_ms=1.0, prefill_ms_min=1.0, prefill_ms_max=1.0, decode_tokens_per_s=tps[0],
                           decode_tokens_per_s_min=tps[1], decode_tokens_per_s_max=tps[2], noise=noise or [])
    vs = None if original else VsOriginal(increase=increase, increase_low=low, increase_high=high, agreement=agreement,
                                          kl_topk=kl, top_k=32, original_perplexity=10.0)
    return LMReport(dataset="t.txt: 4 windows × 25 tokens, 100 tokens scored", source="t.txt", sha256="0", tokens=100,
                    windows=4, window_length=25, perplexity=ppl, vs_original=vs, engine="torch", threads=2, eval_s=1.0,
                    generation=gen)


def test_perplexity_is_over_budget_only_when_its_whole_interval_is_above() -> None:
    b = Budgets(token_max_perplexity_increase=0.05, token_min_agreement=0.5, token_max_kl=1.0)
    base = _report(original=True)
    flags, why = lm_flags(_report(0.08, 0.06, 0.10), base, b)
    assert flags == ["over_budget"] and "whole interval is above the budget +5 %" in why[0] and "n=100" in why[0]
    assert lm_flags(_report(0.08, 0.02, 0.14), base, b) == ([], [])  # within the interval: no conclusion
    flags, why = lm_flags(_report(0.0, -0.01, 0.01, agreement=0.4, kl=2.0), base, b)
    assert flags == ["over_budget"] and "agreement 0.4000 < budget 0.5" in why[0] and "KL ≥ 2.0000" in why[0]


def test_slower_decode_needs_ranges_apart_and_the_same_kind_of_engine() -> None:
    b = Budgets()
    fast = _report(original=True, tps=(20.0, 19.0, 21.0))
    assert "slower" in lm_flags(_report(tps=(10.0, 9.0, 11.0)), fast, b)[0]
    assert lm_flags(_report(tps=(18.5, 18.0, 19.5)), fast, b)[0] == []  # ranges overlap
    flags, why = lm_flags(_report(tps=(2.0, 1.0, 3.0), kv=False), fast, b)
    assert flags == [] and "not comparable" in why[0]
    flags, why = lm_flags(_report(tps=(2.0, 1.0, 3.0), noise=["machine busy: load 9.0 on 2 cores"]), fast, b)
    assert flags == ["noisy"] and "no slower/faster conclusion" in why[0]


@pytest.mark.parametrize(("ref", "got", "expected"), [
    ([1, 2, 3], [1, 2, 3], None), ([1, 2, 3], [1, 9, 3], 1), ([1, 2, 3], [1, 2], 2), ([], [4], 0), ([5], [6], 0)])
def test_first_divergence(ref: list[int], got: list[int], expected: int | None) -> None:
    assert first_divergence(ref, got) == expected


def test_split_at_the_first_divergence() -> None:
    s = GenerationSample(prompt="p", prompt_tokens=1, tokens=[1, 2, 3], text="ab cd", first_divergence=1,
                         common_text="ab", prefill_ms=1, decode_tokens_per_s=1)
    assert s.split() == ("ab", " cd")


def test_peak_rss_sees_memory_held_only_inside_the_block() -> None:
    with PeakRSS() as mem:
        block = np.ones(40_000_000, dtype=np.float32)  # 160 MB, touched
        block[::1024] += 1
        del block
    assert mem.before and mem.peak and mem.peak - mem.before > 120e6 and mem.method


# --------------------------------------------------------------------------- records


def test_old_run_records_load_and_lm_records_round_trip() -> None:
    v1 = json.loads((FIXTURES / "run_v1_demo.json").read_text())
    old = run_from_dict(v1)
    assert all(r.lm is None and "lm" not in r.to_dict() for r in old.results)
    rep = _report(0.01, 0.0, 0.02)
    m = Measurement.model_validate({**old.results[0].measurement().to_dict(), "lm": rep.model_dump(mode="json")})
    rec = RunRecord(run_id="x", results=[old.results[0].model_copy(update={"lm": m.lm})])
    back = run_from_dict(json.loads(json.dumps(rec.to_dict())))
    assert back.results[0].lm == rep and back.results[0].lm.generation.same_as_original == 1
