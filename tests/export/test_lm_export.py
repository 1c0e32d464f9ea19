"""Language-model exports: genai folders (built, or copied when the variant is one), logits ONNX, bundles."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slimline.core.export.records import ExportError, ParityError
from slimline.core.models import open_model
from tests.core import modelfiles as mf


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mf.hf_llama(tmp_path_factory.mktemp("xl") / "llama", train_steps=40)


@pytest.fixture(scope="module")
def corpus(llama: Path) -> Path:
    return llama.parent / "llama-corpus.txt"


@pytest.fixture(scope="module")
def genai(llama: Path, corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    from slimline.core.export.formats import export_model

    out = tmp_path_factory.mktemp("xg")
    return export_model(open_model(llama), "onnx-genai", out, data=corpus, name="tiny"), out


def _offline_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    return env


def test_onnx_genai_is_a_checked_folder_with_chat_script(genai) -> None:
    rec, out = genai
    folder = out / "tiny-genai"
    assert rec.path == str(folder / "model.onnx") and rec.format == "onnx-genai"
    names = {Path(f.path).name for f in rec.files}
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json", "chat.py", "README.md",
            "requirements.txt"} <= names
    p = rec.parity
    assert p is not None and p.kind == "lm" and p.passed and p.precision == "fp32"
    assert p.input_kind == "dataset" and "llama-corpus.txt: 4 windows × 64 tokens" in p.dataset
    assert p.max_abs_error <= p.max_abs_allowed and p.top1_agreement == 1.0
    assert p.greedy is not None and p.greedy.matched == p.greedy.new_tokens == 32 and p.greedy.cache_matched == 32
    notes = "\n".join(rec.notes)
    assert "tokenizer: onnxruntime-genai encodes a sample sentence exactly like transformers" in notes
    assert "chat.py ran offline in a child process: 8 tokens identical" in notes
    assert "onnxruntime-genai==" in (folder / "requirements.txt").read_text()
    assert "chat.py --chat" in (folder / "README.md").read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # no staging left


def test_chat_script_runs_offline_and_prints_tokens_per_second(genai) -> None:
    rec, out = genai
    script = out / "tiny-genai" / "chat.py"
    proc = subprocess.run([sys.executable, str(script), "The value of the function", "--max-new", "6",
                           "--threads", "1"], capture_output=True, text=True, timeout=300, env=_offline_env(),
                          cwd=str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the tiny model's text is mostly newlines: the count of new tokens is what tells it generated
    assert proc.stdout and re.search(r"\[\d+ prompt tokens, [1-6] new, prefill \d+ ms, [\d.]+ tokens/s\]", proc.stderr)
    js = subprocess.run([sys.executable, str(script), "--prompt-ids", "1,60,61,62", "--max-new", "5", "--json",
                         "--threads", "1"], capture_output=True, text=True, timeout=300, env=_offline_env())
    got = json.loads(js.stdout)
    assert got["prompt_tokens"] == 4 and 0 < len(got["tokens"]) <= 5 and got["decode_tokens_per_s"] > 0


def test_a_genai_variant_is_copied_not_rebuilt(genai, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import slimline.core.lm.genai as g
    from slimline.core.export.formats import export_model
    from slimline.core.export.records import sha256_file

    def no_builder(*_: object, **__: object) -> Path:
        raise AssertionError("the builder must not run for a genai variant")

    monkeypatch.setattr(g, "build_genai_model", no_builder)
    rec, out = genai
    variant = open_model(out / "tiny-genai")           # the folder opens as its decoder ONNX
    again = export_model(variant, "onnx-genai", tmp_path, name="copy")
    assert "copied as it is (not rebuilt)" in again.notes[0]
    src = out / "tiny-genai"
    for name in ("model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json"):
        assert sha256_file(tmp_path / "copy-genai" / name) == sha256_file(src / name)
    assert again.parity is not None and again.parity.precision == "copy" and again.parity.max_abs_error == 0.0
    with pytest.raises(ExportError, match="already an onnxruntime-genai folder"):
        export_model(variant, "onnx-genai-int4", tmp_path / "x", name="copy")


def test_onnx_logits_and_plain_onnx_of_an_lm(llama: Path, tmp_path: Path) -> None:
    from slimline.core.export.formats import export_model

    rec = export_model(open_model(llama), "onnx-logits", tmp_path, name="tiny")
    folder = tmp_path / "tiny-logits"
    assert {p.name for p in folder.iterdir()} == {"model.onnx", "tokenizer.json", "tokenizer_config.json"}
    assert rec.parity is not None and rec.parity.passed and rec.parity.greedy is not None
    assert rec.parity.greedy.engine == "greedy loop over full sequences" and rec.parity.input_kind == "random"
    plain = export_model(open_model(llama), "onnx", tmp_path, name="plain")
    assert "causal language model: exported its logits" in plain.notes[0] and plain.parity.passed


def test_bundle_of_an_lm_is_a_genai_folder_with_card_and_triton(llama: Path, corpus: Path, tmp_path: Path) -> None:
    from slimline.core.export.bundle import export_bundle

    out = tmp_path / "b"
    rec = export_bundle(open_model(llama), out, data=corpus, name="tiny", triton=True, lm_precision="int4")
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json", "tokenizer_config.json",
            "chat.py", "README.md", "requirements.txt", "MODEL_CARD.md", "model_card.json", "SHA256SUMS",
            "triton/tiny/config.pbtxt", "triton/tiny/README.md", "triton/tiny/1/model.onnx",
            "triton/tiny/1/model.onnx.data", "triton/tiny/1/genai_config.json"} <= names
    assert "predict.py" not in names and rec.predict_check["script"] == "chat.py"
    export = rec.model_export
    assert export.format == "onnx-genai-int4" and export.parity is not None and export.parity.precision == "int4"
    assert export.parity.greedy is not None and all(export.parity.greedy.cache_explained)
    card = json.loads((out / "model_card.json").read_text())
    assert card["use"][0].startswith("python chat.py") and card["parity"]["kind"] == "lm"
    notes = card["preprocessing"]["notes"]
    assert any("KV-cache decoder: the graph also takes 4 past_key_values.*" in n for n in notes)
    assert "Greedy tokens:" in (out / "MODEL_CARD.md").read_text()
    assert "MODEL_CARD.md" in (out / "README.md").read_text()
    proc = subprocess.run(["sha256sum", "-c", "SHA256SUMS", "--quiet"], cwd=out, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "past_key_values.0.key" in (out / "triton/tiny/config.pbtxt").read_text()
    # int4 is smaller than the fp32 weights it came from
    assert (out / "model.onnx.data").stat().st_size < 0.5 * (llama / "model.safetensors").stat().st_size


def test_parity_failure_writes_nothing(llama: Path, genai, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The builder's folder of another model of the same shape: refused, nothing left in the output folder."""
    import slimline.core.export.lm as xl
    from slimline.core.export.formats import export_model

    other = mf.hf_llama(tmp_path / "src" / "other", seed=1, train_steps=0)
    good = genai[1] / "tiny-genai"

    def wrong_build(handle: object, target: Path, precision: str, tok_dir: object, cancel: object = None,
                    context_length: int = 0) -> Path:
        for f in good.iterdir():
            if f.name not in ("chat.py", "README.md", "requirements.txt"):
                shutil.copyfile(f, target / f.name)
        return target / "model.onnx"

    monkeypatch.setattr(xl, "_build", wrong_build)
    out = tmp_path / "out"
    with pytest.raises(ParityError, match="parity check failed"):
        export_model(open_model(other), "onnx-genai", out, name="bad")
    assert not out.exists() or list(out.iterdir()) == []


def test_refusals_name_the_problem(tmp_path: Path, mlp) -> None:
    from slimline.core.export.formats import export_model

    gpt2 = mf.hf_causal_lm(tmp_path / "gpt2")
    with pytest.raises(ExportError) as err:
        export_model(open_model(gpt2), "onnx-genai", tmp_path / "o", name="g")
    assert "does not support GPT2LMHeadModel" in err.value.message and "onnx-logits" in err.value.hint
    with pytest.raises(ExportError, match="for causal language models"):
        export_model(open_model(mlp[0]), "onnx-genai-int4", tmp_path / "o", name="m")
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_a_context_length_cap_reaches_the_export_and_its_check(llama: Path, corpus: Path, tmp_path: Path) -> None:
    from slimline.core.export.formats import export_model
    from slimline.core.lm.genai import context_length_of

    rec = export_model(open_model(llama), "onnx-genai", tmp_path, data=corpus, name="capped", lm_context_length=48)
    folder = tmp_path / "capped-genai"
    assert context_length_of(folder) == 48                                  # the model's own is 256
    assert rec.parity is not None and rec.parity.passed and "× 47 tokens" in rec.parity.dataset
    assert any("serves at most 48 tokens" in n for n in rec.notes), rec.notes
    with pytest.raises(ExportError, match="not to onnx-logits"):
        export_model(open_model(llama), "onnx-logits", tmp_path / "l", name="l", lm_context_length=48)


def test_cli_refuses_a_context_length_for_other_formats(llama: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "slimline.core.cli", "export", str(llama), "--format", "onnx",
                           "--out", str(tmp_path / "o"), "--context-length", "64"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and "--context-length applies to the onnx-genai formats" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_windows_export_job_passes_the_context_length(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import slimline.core.export.task as task

    seen: dict[str, object] = {}

    class Rec:
        def model_dump(self, mode: str) -> dict[str, object]:
            return {}

    monkeypatch.setattr(task, "export_target", lambda spec: (type("V", (), {"name": "v"})(), None))
    monkeypatch.setattr(task, "export_variant", lambda *a, **kw: seen.update(kw) or Rec())
    task.run_export({"format": "onnx-genai-int4", "out_dir": str(tmp_path), "name": "m", "lm_context_length": 1024})
    assert seen["lm_context_length"] == 1024
