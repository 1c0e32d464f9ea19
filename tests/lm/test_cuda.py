"""LLM pruning, distillation and LM evaluation on a CUDA GPU, through the CLI (skipped where torch sees no GPU).

What the CPU suite cannot show: every tensor of SparseGPT's column loop, the block-influence calibration, the
distillation and the perplexity evaluation on the device the pipeline names. Run on a GPU machine with
``pytest tests/lm/test_cuda.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_prune_and_distill_a_causal_lm_on_the_gpu(tiny_lm: Path, tiny_text: Path, tmp_path: Path) -> None:
    from tests.lm.test_llm_demo import _cli

    pipe = {"format": "slimline.pipeline", "schema_version": 1, "name": "cuda",
            "steps": [{"id": "s1", "plugin": "builtin.prune_llm", "plugin_version": "1", "enabled": True,
                       "params": {"method": "sparsegpt", "pattern": "n:m", "calibration_windows": 8,
                                  "window_length": 32}},
                      {"id": "s2", "plugin": "builtin.prune_llm", "plugin_version": "1", "enabled": True,
                       "params": {"method": "blocks", "blocks": 1, "calibration_windows": 8, "window_length": 32}},
                      {"id": "s3", "plugin": "builtin.distill", "plugin_version": "1", "enabled": True,
                       "params": {"epochs": 2, "batch_size": 8, "learning_rate": 2e-4, "lm_window_length": 32,
                                  "lm_windows": 48, "device": "cuda"}}],
            "evaluation": {"latency": {"batch_sizes": [1], "runs": 3, "warmup": 1, "threads": 1},
                           "lm": {"window_length": 32, "window_count": 6, "prompt_count": 2, "max_new_tokens": 8},
                           "device": "cuda"}}
    (tmp_path / "p.json").write_text(json.dumps(pipe), encoding="utf-8")
    paragraphs = tiny_text.read_text(encoding="utf-8").split("\n\n")
    cut = int(len(paragraphs) * 0.7)
    (tmp_path / "train.txt").write_text("\n\n".join(paragraphs[:cut]), encoding="utf-8")
    (tmp_path / "eval.txt").write_text("\n\n".join(paragraphs[cut:]), encoding="utf-8")
    out = _cli("run", str(tmp_path / "p.json"), str(tiny_lm), "--data", str(tmp_path / "eval.txt"),
               "--train-data", str(tmp_path / "train.txt"), "--workspace", str(tmp_path / "ws"), "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    steps = {r["step_id"]: r for r in json.loads(out.stdout)["results"]}
    assert list(steps) == ["original", "s1", "s2", "s3"]
    assert "2:4 pattern" in " ".join(steps["s1"]["notes"]) and "on cuda" in " ".join(steps["s3"]["notes"])
    assert steps["s3"]["metrics"]["device_cuda"] == 1.0 and steps["s3"]["metrics"]["steps"] > 0
    assert not any("CUDA was asked for" in n for r in steps.values() for n in r["notes"])   # ran where it was asked
