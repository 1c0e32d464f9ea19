"""The LLM demos: `run --demo llm` (SmolLM2 from the real-model cache) and both demo pipelines on a tiny Llama."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slimline.core.demo import demo_dir

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict[str, str] | None = None, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slimline.core.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, cwd=ROOT, timeout=timeout)


def _small(pipeline: Path, out: Path, **step_params: dict[str, object]) -> Path:
    """The demo pipeline with its LM evaluation shrunk for a tiny model (steps unchanged unless given)."""
    doc = json.loads(pipeline.read_text(encoding="utf-8"))
    doc["evaluation"]["lm"] = {"window_length": 32, "window_count": 6, "prompt_count": 2, "max_new_tokens": 8}
    doc["evaluation"]["latency"] = {"batch_sizes": [1], "runs": 3, "warmup": 1, "threads": 1}
    for step in doc["steps"]:
        step["params"].update(step_params.get(step["id"], {}))
    out.write_text(json.dumps(doc), encoding="utf-8")
    return out


def test_demo_llm_without_the_cache_says_how_to_fetch_it(tmp_path: Path) -> None:
    out = _cli("run", "--demo", "llm", "--workspace", str(tmp_path / "ws"), env={"SLIMLINE_REALMODELS": str(tmp_path)})
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "SmolLM2" in out.stderr and "make realmodels" in out.stderr


def test_weight_only_demo_pipeline_runs_on_any_causal_lm_folder(tiny_lm: Path, tiny_text: Path,
                                                                 tmp_path: Path) -> None:
    pipe = _small(demo_dir() / "llm_pipeline.json", tmp_path / "p.json",
                  s2={"window_length": 32, "calibration_windows": 4, "check_windows": 2})
    out = _cli("run", str(pipe), str(tiny_lm), "--data", str(tiny_text), "--workspace", str(tmp_path / "ws"),
               "--threads", "1", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    run = json.loads(out.stdout)
    steps = {r["step_id"]: r for r in run["results"]}
    assert set(steps) >= {"original", "s1", "s2"}
    assert steps["s2"]["plugin"] == "builtin.quantize_weight_only"
    size = {k: v["size"]["bytes_on_disk"] for k, v in steps.items()}
    assert size["s2"] < 0.6 * size["s1"]  # a tiny model: norms and the fp32 head scales weigh more than in 135M
    lm = steps["s2"]["lm"]
    assert lm["perplexity"]["value"] > 1 and lm["vs_original"]["agreement"] > 0.3


def test_prune_distill_quantize_demo_pipeline_runs(tiny_lm: Path, tiny_text: Path, tmp_path: Path) -> None:
    pipe = _small(demo_dir() / "llm_prune_distill.json", tmp_path / "p.json",
                  s1={"blocks": 1, "calibration_windows": 4, "window_length": 32},
                  s2={"lm_window_length": 32, "lm_windows": 16},
                  s4={"window_length": 32, "calibration_windows": 4, "check_windows": 2})
    paragraphs = tiny_text.read_text(encoding="utf-8").split("\n\n")
    cut = int(len(paragraphs) * 0.7)
    (tmp_path / "train.txt").write_text("\n\n".join(paragraphs[:cut]), encoding="utf-8")
    (tmp_path / "eval.txt").write_text("\n\n".join(paragraphs[cut:]), encoding="utf-8")
    out = _cli("run", str(pipe), str(tiny_lm), "--data", str(tmp_path / "eval.txt"),
               "--train-data", str(tmp_path / "train.txt"),
               "--workspace", str(tmp_path / "ws"), "--threads", "1", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    run = json.loads(out.stdout)
    assert [r["step_id"] for r in run["results"]] == ["original", "s1", "s2", "s3", "s4"]
    assert all(r.get("status", "done") != "failed" for r in run["results"]), run["results"]


@pytest.mark.real("smollm2-135m-q4_1", "pydoc-sentences")
def test_demo_llm_resolves_to_the_cached_model_and_text() -> None:
    from slimline.core.demo import llm_demo_paths

    paths = llm_demo_paths()
    assert paths["model"].suffix == ".gguf" and paths["data"].name == "sentences.txt"
    assert paths["pipeline"].is_file()
