"""LLM steps on a tiny trained Llama: Wanda/SparseGPT vs magnitude, 2:4, blocks, heads, low-rank, LM distillation.

The fixture (4 blocks, hidden 64, 4 query / 2 KV heads, trained 80 steps on stdlib docstrings) is
built once; its corpus is split by paragraph into a training and an evaluation text, and every
perplexity here is on windows of the evaluation text the steps never saw.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slimline.core.data import DataBundle, Dataset
from slimline.core.errors import StepFailed
from slimline.core.handle import ModelHandle
from slimline.core.lm.text import load_tokenizer, text_windows
from slimline.core.plugin import StepContext
from slimline.plugins.distill import Distill
from slimline.plugins.lowrank import LowRankFactorize
from slimline.plugins.prune import LLMPrune
from slimline.plugins.prune.sparsity import nm_valid
from tests.core import modelfiles as mf

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

P = LLMPrune.Params
CAL = {"calibration_windows": 16, "window_length": 64}


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from slimline.core.models.hf import open_hf

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("llm")
    folder = mf.hf_llama(d / "llama", layers=4, train_steps=80)
    paragraphs = (d / "llama-corpus.txt").read_text(encoding="utf-8").split("\n\n")
    cut = int(len(paragraphs) * 0.8)
    train, ev = d / "train.txt", d / "eval.txt"
    train.write_text("\n\n".join(paragraphs[:cut]), encoding="utf-8")
    ev.write_text("\n\n".join(paragraphs[cut:]), encoding="utf-8")
    windows = text_windows(ev, load_tokenizer(folder), length=64, count=24)
    return {"dir": folder, "handle": open_hf(folder), "train": train, "eval": ev, "windows": windows, "tmp": d}


def _ds(path: Path) -> Dataset:
    """What the runner's loader makes of a text file (only its source matters to LM steps)."""
    return Dataset(name=path.name, source=str(path), inputs={"input_ids": np.zeros((2, 4), np.int64)})


def _ctx(lm: dict[str, Any], name: str, events: list | None = None, source: ModelHandle | None = None,
         train: Path | None = None) -> StepContext:
    tr = _ds(train or lm["train"])
    data = DataBundle(eval=_ds(lm["eval"]), train=tr, calibration=tr)
    cb = (lambda k, p: events.append((k, p))) if events is not None else None
    return StepContext(work_dir=lm["tmp"] / "work" / name, data=data, source_model=source or lm["handle"],
                       event_cb=cb, threads=1)


def _model(handle: ModelHandle) -> Any:
    from slimline.plugins._shared.lm import load_lm

    return load_lm(handle)


def _ppl(lm: dict[str, Any], handle_or_module: Any) -> float:
    """Perplexity on the evaluation windows (scored tokens only)."""
    m = _model(handle_or_module) if isinstance(handle_or_module, ModelHandle) else handle_or_module
    w = lm["windows"]
    ids = torch.from_numpy(w.ids)
    with torch.no_grad():
        logits = m(input_ids=ids).logits[:, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                            reduction="none")
    mask = torch.from_numpy(w.scored[:, 1:]).reshape(-1)
    return float(torch.exp(nll[mask].mean()))


def _prune(lm: dict[str, Any], handle: ModelHandle, name: str, **params: Any) -> Any:
    return LLMPrune().run(handle, P(**{**CAL, **params}), _ctx(lm, name, source=handle))


def _outlier_copy(lm: dict[str, Any], scale: float = 30.0, k: int = 8) -> tuple[ModelHandle, dict[str, list[int]]]:
    """The same function, with the k most used hidden features of every block 30× louder and their weights 30× smaller.

    Real LLMs have such outlier features (a handful of hidden dimensions carrying activations two orders of
    magnitude above the rest, which the model relies on); the tiny fixture is too small to grow them.
    Scaling a block's RMSNorm gains of k features by s and the Linear columns that read them by 1/s leaves
    every output unchanged, and it is the case magnitude pruning gets wrong: those columns look small but
    carry the signal. The features picked are the block's most used ones (‖X_j‖·Σ|W_:j| on training text).
    """
    from transformers import AutoModelForCausalLM

    from slimline.core.models.hf import open_hf
    from slimline.plugins._shared.lm import copy_tokenizer

    dst = lm["tmp"] / "outliers"
    if (dst / "config.json").is_file():
        return open_hf(dst), json.loads((dst.parent / "outlier-features.json").read_text())
    m = AutoModelForCausalLM.from_pretrained(str(lm["dir"])).eval()
    ref = _ppl(lm, m)
    pairs = [(layer.input_layernorm, [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj])
             for layer in m.model.layers] + \
            [(layer.post_attention_layernorm, [layer.mlp.gate_proj, layer.mlp.up_proj]) for layer in m.model.layers]
    sq: dict[int, Any] = {}
    hooks = [readers[0].register_forward_hook(
        lambda mod, inp, out, i=i: sq.__setitem__(i, sq.get(i, 0) + (inp[0].reshape(-1, inp[0].shape[-1]) ** 2)
                                                  .sum(0))) for i, (_, readers) in enumerate(pairs)]
    train = text_windows(lm["train"], load_tokenizer(lm["dir"]), length=64, count=16)
    with torch.no_grad():
        m(input_ids=torch.from_numpy(train.ids))
    for hk in hooks:
        hk.remove()
    names = {id(mod): n for n, mod in m.named_modules()}
    loud: dict[str, list[int]] = {}
    with torch.no_grad():
        for i, (norm, readers) in enumerate(pairs):
            use = torch.sqrt(sq[i]) * sum(r.weight.abs().sum(0) for r in readers)
            feats = torch.topk(use, k).indices
            norm.weight[feats] *= scale
            for r in readers:
                r.weight[:, feats] /= scale
                loud[names[id(r)]] = sorted(feats.tolist())
    assert _ppl(lm, m) == pytest.approx(ref, rel=1e-4)  # same function
    m.save_pretrained(str(dst))
    copy_tokenizer(lm["dir"], dst)
    (dst.parent / "outlier-features.json").write_text(json.dumps(loud))
    return open_hf(dst), loud


def _decoder_weights(handle: ModelHandle) -> dict[str, np.ndarray]:
    m = _model(handle)
    return {n: mod.weight.detach().numpy() for n, mod in m.named_modules()
            if isinstance(mod, torch.nn.Linear) and ".layers." in n}


# --- unstructured / 2:4 --------------------------------------------------------------------------
def test_wanda_and_sparsegpt_beat_magnitude_at_half_sparsity_on_outlier_features(lm):
    h, loud = _outlier_copy(lm)
    outs = {m: _prune(lm, h, f"out-{m}", method=m).model for m in ("magnitude", "wanda", "sparsegpt")}
    # magnitude sees small weights in the loud features' columns and zeroes nearly all of them;
    # Wanda weighs each weight by its input's norm and keeps them like any other column (SparseGPT zeroes
    # many of them too but moves their contribution onto the weights it keeps: judged by perplexity below)
    zeroed = {}
    for m, out in outs.items():
        w = _decoder_weights(out)
        zeroed[m] = np.mean([(w[name][:, cols] == 0).mean() for name, cols in loud.items()])
    assert zeroed["magnitude"] > 0.95 and zeroed["wanda"] < 0.5, zeroed
    got = {m: _ppl(lm, out) for m, out in outs.items()}
    assert got["magnitude"] > 1.03 * got["wanda"], got
    assert got["magnitude"] > 1.03 * got["sparsegpt"], got
    # Wanda's score |W|·‖X‖ does not see the rescaling: same perplexity as on the original model
    plain = _ppl(lm, _prune(lm, lm["handle"], "plain-wanda", method="wanda").model)
    assert got["wanda"] == pytest.approx(plain, rel=0.005)


def test_unstructured_report_is_honest_about_size_and_speed(lm):
    out = _prune(lm, lm["handle"], "honest", method="wanda")
    w = _decoder_weights(out.model)
    assert all(abs(float((a == 0).mean()) - 0.5) < 0.01 for a in w.values())
    assert out.metrics["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert out.metrics["bytes"] == out.metrics["bytes_before"]           # dense zeros: same file size
    assert out.metrics["zip_bytes"] < 0.9 * out.metrics["zip_bytes_before"]
    text = " ".join(out.notes)
    assert "File size unchanged" in text and "Speed does not change" in text
    assert out.model.format == "hf" and (Path(out.model.path) / "tokenizer.json").is_file()


@pytest.mark.parametrize("method", ["wanda", "sparsegpt", "magnitude"])
def test_two_four_pattern_holds_exactly(lm, method):
    out = _prune(lm, lm["handle"], f"24-{method}", method=method, pattern="n:m", n=2, m=4)
    for name, a in _decoder_weights(out.model).items():
        keep = a != 0
        assert nm_valid(keep, 1, 2, 4), name
        assert (keep.reshape(-1, 4).sum(axis=1) == 2).all(), name  # exactly 2 of 4, not fewer
    assert "2:4 is faster only with sparse tensor-core kernels" in " ".join(out.notes)


def test_n_must_be_below_m():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="must be smaller than m"):
        P(pattern="n:m", n=4, m=4)


def test_wanda_needs_text_and_says_so(lm):
    ctx = StepContext(work_dir=lm["tmp"] / "work" / "nodata", source_model=lm["handle"])
    with pytest.raises(StepFailed, match="needs a text file"):
        LLMPrune().run(lm["handle"], P(method="wanda"), ctx)


def test_non_lm_models_are_refused_in_check(make_tiny_mlp):
    from slimline.core.torchmodel import handle_for_archive

    path, _ = make_tiny_mlp()
    problems = LLMPrune().check(handle_for_archive(path), P())
    assert problems and "causal language models" in problems[0].message


def test_calibration_on_the_evaluation_text_skips_what_the_evaluation_scores_or_is_flagged(lm):
    from types import SimpleNamespace

    from slimline.core.pipeline import LMSettings

    ctx = _ctx(lm, "leak-cal", train=lm["eval"])
    ctx.evaluation = SimpleNamespace(lm=LMSettings(window_length=16, window_count=2))   # scores 32 tokens only
    out = LLMPrune().run(lm["handle"], P(method="blocks", blocks=1, **CAL), ctx)
    assert not out.warnings and any("start after the text the evaluation scores" in n for n in out.notes)
    ctx = _ctx(lm, "leak-cal-2", train=lm["eval"])
    ctx.evaluation = SimpleNamespace(lm=LMSettings(window_count=100_000))               # scores the whole text
    out = LLMPrune().run(lm["handle"], P(method="blocks", blocks=1, **CAL), ctx)
    assert any("calibrating on the text the evaluation scores" in w for w in out.warnings)


# --- structured ----------------------------------------------------------------------------------
def test_block_removal_drops_the_least_influential_block_and_reloads(lm):
    from transformers import AutoModelForCausalLM

    out = _prune(lm, lm["handle"], "blocks", method="blocks", blocks=1)
    cfg = json.loads((Path(out.model.path) / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 3
    table = out.tables["blocks"]
    removed = [r for r in table if r["status"] == "removed"]
    assert len(removed) == 1 and removed[0]["influence"] == min(r["influence"] for r in table)
    reloaded = AutoModelForCausalLM.from_pretrained(out.model.path)
    assert len(reloaded.model.layers) == 3
    assert [blk.self_attn.layer_idx for blk in reloaded.model.layers] == [0, 1, 2]
    assert out.metrics["params_after"] < out.metrics["params_before"]
    assert out.metrics["bytes"] < 0.85 * out.metrics["bytes_before"]
    assert _ppl(lm, out.model) < 2 * _ppl(lm, lm["handle"])          # still a language model
    ids = torch.tensor([[1, 50, 60, 70]])
    gen = reloaded.generate(ids, max_new_tokens=5, do_sample=False)  # the KV cache indices fit
    assert gen.shape == (1, 9)


def test_block_ratio_rounds_down_like_the_issue_says():
    from slimline.plugins.prune.llm import _block_count

    assert _block_count(P(method="blocks", block_ratio=0.25), 30) == 7
    assert _block_count(P(method="blocks", blocks=3), 30) == 3


@pytest.mark.parametrize(("mode", "heads", "kv"), [("query", 2, 2), ("kv", 2, 1)])
def test_heads_and_channels_are_removed_gqa_aware(lm, mode, heads, kv):
    from transformers import AutoModelForCausalLM

    out = _prune(lm, lm["handle"], f"width-{mode}", method="heads_channels", head_ratio=0.5, mlp_ratio=0.25,
                 head_mode=mode)
    cfg = json.loads((Path(out.model.path) / "config.json").read_text())
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (heads, kv, 16)
    assert cfg["intermediate_size"] == 96
    m = AutoModelForCausalLM.from_pretrained(out.model.path)
    blk = m.model.layers[0]
    assert blk.self_attn.q_proj.weight.shape == (heads * 16, 64)
    assert blk.self_attn.k_proj.weight.shape == (kv * 16, 64)
    assert blk.mlp.down_proj.weight.shape == (64, 96)
    assert out.metrics["params_after"] < 0.85 * out.metrics["params_before"]
    assert _ppl(lm, out.model) < 2 * _ppl(lm, lm["handle"])
    assert m.generate(torch.tensor([[1, 50, 60]]), max_new_tokens=4, do_sample=False).shape == (1, 7)


def test_activation_importance_picks_other_channels_than_magnitude(lm):
    h, _ = _outlier_copy(lm)
    outs = {imp: _prune(lm, h, f"imp-{imp}", method="heads_channels", head_ratio=0.0, mlp_ratio=0.5,
                        importance=imp) for imp in ("activation", "magnitude")}
    wa, wm = (_model(o.model).model.layers[0].mlp.down_proj.weight for o in outs.values())
    assert wa.shape == wm.shape and not torch.equal(wa, wm)


# --- low-rank ------------------------------------------------------------------------------------
def test_data_aware_lowrank_on_llm_linears_with_text(lm):
    from slimline.core.torchmodel import load_torch_module

    ctx = _ctx(lm, "lowrank")
    out = LowRankFactorize().run(lm["handle"], LowRankFactorize.Params(
        data_aware=True, energy=0.95, calibration_windows=8, window_length=64), ctx)
    rows = {r["layer"]: r for r in out.tables["lowrank"]}
    assert rows["lm_head"]["status"] == "skipped"
    done = [n for n, r in rows.items() if r["status"] == "factorized"]
    assert any(n.endswith("self_attn.q_proj") for n in done) and any(n.endswith("mlp.down_proj") for n in done)
    assert "train.txt: 8 windows × 64 tokens" in " ".join(out.notes)
    m = load_torch_module(out.model)
    assert isinstance(m.model.layers[0].mlp.down_proj, torch.nn.Sequential)
    assert np.isfinite(_ppl(lm, m))
    # ranks too high to pay off are skipped, not forced
    near_full = LowRankFactorize().run(lm["handle"], LowRankFactorize.Params(
        data_aware=True, energy=0.9999, calibration_windows=8, window_length=64), _ctx(lm, "lowrank-full"))
    assert any("would not save parameters" in r["reason"] for r in near_full.tables["lowrank"])


def test_structured_pruning_after_lowrank_is_refused_before_running(lm):
    lr = LowRankFactorize().run(lm["handle"], LowRankFactorize.Params(rank_mode="ratio", ratio=0.25),
                                _ctx(lm, "lr-first"))
    problems = LLMPrune().check(lr.model, P(method="blocks", blocks=1))
    assert problems and "structured pruning must come first" in problems[0].message
    assert LLMPrune().check(lr.model, P(method="wanda")) == []   # unstructured works on the factors too


# --- distillation --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pruned(lm) -> ModelHandle:
    return _prune(lm, lm["handle"], "student", method="blocks", blocks=2).model


def test_distillation_lowers_perplexity_of_a_pruned_student(lm, pruned):
    events: list[tuple[str, dict]] = []
    before = _ppl(lm, pruned)
    out = Distill().run(pruned, Distill.Params(epochs=2, batch_size=8, learning_rate=1e-3, temperature=2.0,
                                               alpha=0.0, lm_window_length=64, lm_windows=160,
                                               validation_fraction=0.1), _ctx(lm, "distill", events))
    after = _ppl(lm, out.model)
    assert after < before, (before, after)
    assert out.metrics["val_perplexity"] < out.metrics["val_perplexity_before"]
    assert out.model.format == "hf" and (Path(out.model.path) / "tokenizer.json").is_file()
    losses = [p for k, p in events if k == "loss" and "series" not in p]
    ppls = [p for k, p in events if k == "perplexity"]
    assert len(losses) == out.metrics["steps"] and all(np.isfinite(p["value"]) for p in losses)
    assert ppls[0]["step"] == 0 and len(ppls) >= 3 and ppls[0]["tokens"] > 0
    assert any(k == "loss" and p.get("series") for k, p in events)   # validation curve on the loss chart
    assert "T²·KL(teacher ‖ student)" in " ".join(out.notes)


def test_distillation_refuses_to_train_on_the_evaluation_text(lm, pruned):
    with pytest.raises(StepFailed, match="also the evaluation text"):
        Distill().run(pruned, Distill.Params(epochs=1, lm_window_length=64), _ctx(lm, "leak", train=lm["eval"]))


def test_distill_a_lowrank_archive_keeps_its_layers(lm):
    from slimline.core.torchmodel import load_torch_module

    lr = LowRankFactorize().run(lm["handle"], LowRankFactorize.Params(
        data_aware=True, energy=0.95, calibration_windows=8, window_length=64), _ctx(lm, "lr-student"))
    out = Distill().run(lr.model, Distill.Params(epochs=1, batch_size=8, learning_rate=1e-3, alpha=0.0,
                                                 lm_window_length=64, lm_windows=40, max_batches_per_epoch=2),
                        _ctx(lm, "lr-distill"))
    assert out.model.format == "slimline_torch"
    m = load_torch_module(out.model)
    assert isinstance(m.model.layers[0].mlp.down_proj, torch.nn.Sequential)


def test_installer_llm_pipeline_is_valid():
    from slimline.core.pipeline import load_pipeline

    pipe = load_pipeline(Path(__file__).parents[1] / "installer" / "pipeline_plugins_llm_prune.json")
    classes = {"builtin.prune_llm": LLMPrune, "builtin.distill": Distill, "builtin.lowrank": LowRankFactorize}
    for step in pipe.steps:
        classes[step.plugin].Params.model_validate(step.params)
