"""Helpers of the engine tests: the demo sweep request (6 variants of one pruning step)."""
from __future__ import annotations

from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"
# 6 variants of one magnitude-pruning step on the demo CNN; evaluation trimmed so each variant takes seconds
GRID = ["s1.sparsity=0.1,0.2,0.3", "s1.scope=layer,global"]
EVALUATION = {"max_rows": 96, "latency": {"batch_sizes": [1], "runs": 3, "warmup": 1}}


def demo_request(workspace: Path, engine: str = "local", grid: list[str] | None = None, **fields):
    from slimline.core.engines.sweep import SweepRequest
    from slimline.core.pipeline import parse_pipeline

    pipeline = parse_pipeline({"format": "slimline.pipeline", "schema_version": 1, "name": "demo sweep",
                               "steps": [{"id": "s1", "plugin": "builtin.prune_magnitude", "params": {}}]})
    return SweepRequest(pipeline=pipeline, model_path=str(DEMO / "digits_cnn.safetensors"),
                        data_path=str(DEMO / "digits_eval.npz"), grid=grid or GRID, evaluation=EVALUATION,
                        engine=engine, workspace=str(workspace), **fields)
