"""One tiny trained Llama (and its genai / logits-only ONNX forms) for all LM evaluation tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.core import modelfiles as mf


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    return mf.hf_llama(tmp_path_factory.mktemp("lmeval") / "llama", train_steps=40)


@pytest.fixture(scope="session")
def tiny_text(tiny_lm: Path) -> Path:
    return tiny_lm.parent / "llama-corpus.txt"


@pytest.fixture(scope="session")
def tiny_genai(tiny_lm: Path) -> Path:
    from slimline.core.lm.genai import build_genai_model

    return build_genai_model(tiny_lm, tiny_lm.parent / "genai-fp32", "fp32")


@pytest.fixture(scope="session")
def tiny_logits_onnx(tiny_lm: Path) -> Path:
    from tests.lm.helpers import logits_onnx

    return logits_onnx(tiny_lm, tiny_lm.parent / "logits" / "model.onnx", seq=128)
