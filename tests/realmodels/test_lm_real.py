"""SmolLM2-135M on real English text: the original step measures in well under a minute on 2 threads.

The issue reported 318 s for the original of this model. With token windows (24 × 128), a few
timed greedy continuations and a sampled compressed size, measuring it is a matter of seconds
of CPU. Where GGUF files do not open directly yet, the GGUF is dequantized here through
transformers and rebuilt as a float32 HF folder.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .fetch import ENTRIES, dataset_path, model_path

ROOT = Path(__file__).resolve().parents[2]
SMOLLM = ENTRIES["smollm2-135m-q4_1"]
SENTENCES = ENTRIES["pydoc-sentences"]


def dequantized_folder(gguf: Path, out: Path) -> Path:
    """The GGUF's weights as a float32 HF folder (config + safetensors + tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    cfg = loaded.config
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    model = type(loaded)(cfg)  # a GGUF-loaded model refuses save_pretrained until rebuilt
    model.load_state_dict(loaded.state_dict())
    model.eval().save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def smollm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The GGUF itself where Slimline opens GGUF files, else a float folder dequantized here."""
    import importlib.util

    if importlib.util.find_spec("slimline.core.models.gguf") is not None:
        return model_path(SMOLLM)
    return dequantized_folder(model_path(SMOLLM), tmp_path_factory.mktemp("smollm2") / "smollm2-135m-float")


@pytest.mark.real("smollm2-135m-q4_1", "pydoc-sentences")
def test_smollm2_original_measures_in_well_under_a_minute(smollm_folder: Path, tmp_path: Path) -> None:
    pipe = tmp_path / "measure.json"
    pipe.write_text(json.dumps({"format": "slimline.pipeline", "schema_version": 1, "name": "measure", "steps": []}))
    ws = tmp_path / "ws"
    proc = subprocess.run([sys.executable, "-m", "slimline.core.cli", "run", str(pipe), str(smollm_folder),
                           "--data", str(dataset_path(SENTENCES)), "--threads", "2", "--workspace", str(ws)],
                          capture_output=True, text=True, cwd=ROOT, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from slimline.core.history import list_runs

    (run,) = list_runs(ws)
    original = run.results[0]
    lm = original.lm
    assert lm is not None and lm.windows == 24 and lm.window_length == 128 and lm.threads == 2
    assert lm.tokens == 24 * 127  # no BOS for SmolLM: each window's first token is context only
    assert 5 < lm.perplexity.value < 60, lm.perplexity  # a real 135M LM on English prose
    g = lm.generation
    assert g is not None and g.kv_cache and g.threads == 2 and len(g.samples) == 4
    assert all(s.tokens for s in g.samples) and g.decode_tokens_per_s > 0
    assert original.size.zip_sampled_bytes  # a 540 MB file: compressed size estimated from samples
    assert lm.measure_s is not None and lm.measure_s <= original.duration_s
    if g.noise:  # other processes held the cores: a wall-clock bound says nothing about Slimline then
        pytest.skip(f"the time bound is judged on a quiet machine only ({'; '.join(g.noise)}); here the original "
                    f"took {original.duration_s:.0f} s, {lm.cpu_s:.0f} s of CPU")
    assert original.duration_s < 60, (original.duration_s, lm.cpu_s)
