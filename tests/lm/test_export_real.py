"""SmolLM2-135M (real weights, from the corpus' GGUF): genai int4 export and its chat.py, checked like any export."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.realmodels.fetch import ENTRIES, cache_root, model_path

MODEL_ID = "smollm2-135m-q4_1"
pytestmark = pytest.mark.real(MODEL_ID, "pydoc-sentences")


def _cached(entry_id: str) -> Path:
    path = model_path(ENTRIES[entry_id])
    if not path.exists():
        pytest.skip(f"real corpus entry {entry_id} is not in the cache {cache_root()}; run `make realmodels`")
    return path


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The GGUF dequantized to a float32 HF folder (until core.models.gguf opens GGUF itself)."""
    from tests.lm.gguf_float import float_folder_from_gguf

    gguf = _cached(MODEL_ID)
    return float_folder_from_gguf(gguf, tmp_path_factory.mktemp("smol") / "smollm2")


def test_smollm2_int4_genai_export_is_checked_and_chat_runs(smollm2: Path, tmp_path: Path) -> None:
    from slimline.core.export.formats import export_model
    from slimline.core.models import open_model

    text = _cached("pydoc-sentences")
    text = text / "sentences.txt" if text.is_dir() else text
    rec = export_model(open_model(smollm2), "onnx-genai-int4", tmp_path, data=text, name="smollm2")
    p = rec.parity
    assert p is not None and p.passed and p.kind == "lm" and p.precision == "int4"
    assert p.input_kind == "dataset" and "sentences.txt: 4 windows × 64 tokens" in p.dataset
    # int4 loses some agreement (judged elsewhere); a broken model would sit near chance (1/49152)
    assert 0.5 <= (p.top1_agreement or 0) < 1.0 and (p.mean_cosine or 0) > 0.9
    # the KV-cache path agrees with the same ONNX run without cache, up to near-ties of the int4 kernels
    assert p.greedy is not None and all(p.greedy.cache_explained) and (p.greedy.cache_matched or 0) > 0
    weights = (tmp_path / "smollm2-genai-int4" / "model.onnx.data").stat().st_size
    assert weights < 0.2 * (smollm2 / "model.safetensors").stat().st_size   # builder int4: about 0.16x
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    proc = subprocess.run([sys.executable, str(tmp_path / "smollm2-genai-int4" / "chat.py"), "--template",
                           "What is the capital of France?", "--max-new", "12", "--threads", "2", "--json"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert len(out["tokens"]) > 0 and out["text"].strip() and out["decode_tokens_per_s"] > 0
