"""Small real models for export tests: an MLP as a Slimline torch archive, its ONNX
export, labelled evaluation data and a run record that points at both."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def mlp(tmp_path_factory):
    """(archive path, eval npz path): Linear-ReLU-Linear on 16 features, 4 classes."""
    import torch

    from slimline.core.handle import TensorSpec
    from slimline.core.torchmodel import save_torch_module

    d = tmp_path_factory.mktemp("mlp")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    path = d / "mlp.safetensors"
    save_torch_module(model, path, inputs=[TensorSpec(name="x", shape=["batch", 16])],
                      outputs=[TensorSpec(name="y", shape=["batch", 4])],
                      extra_meta={"task": "classification", "preprocessing": "standardised features"})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(70, 16)).astype(np.float32)   # 70 rows: batches of 64 + a partial batch of 6
    with torch.no_grad():
        labels = model(torch.from_numpy(x)).argmax(1).numpy()
    labels[:5] = (labels[:5] + 1) % 4                 # not a perfect score: accuracy must be computed
    data = d / "eval.npz"
    np.savez(data, x=x, labels=labels)
    return path, data


@pytest.fixture(scope="session")
def mlp_onnx(mlp, tmp_path_factory):
    """The MLP exported to ONNX by export_model (torch → ONNX conversion), and its record."""
    from slimline.core.export.formats import export_model
    from slimline.core.models import open_model

    path, data = mlp
    out = tmp_path_factory.mktemp("mlp_onnx")
    rec = export_model(open_model(path), "onnx", out, data=data, name="mlp")
    return Path(rec.path), rec


def _result(step_id: str, title: str, plugin: str, handle, acc: float, p50: float) -> dict:
    size = {"bytes_on_disk": handle.bytes_on_disk, "zip_bytes": int(handle.bytes_on_disk * 0.9),
            "param_count": handle.param_count}
    lat = {b: {"p50_ms": p50 * int(b) ** 0.5, "p90_ms": p50 * int(b) ** 0.5 * 1.2, "min_ms": p50 * int(b) ** 0.5 * 0.9,
               "mean_ms": p50 * int(b) ** 0.5, "std_ms": 0.01, "max_ms": p50 * int(b) ** 0.5 * 1.5,
               "spread": 0.2, "runs": 20, "warmup": 5, "threads": 1, "provider": "CPUExecutionProvider",
               "device_name": "test CPU", "batch": int(b), "input_shapes": {"x": [int(b), 16]},
               "input_kind": "dataset"} for b in ("1", "64")}
    return {"step_id": step_id, "plugin": plugin, "title": title, "model": handle.model_dump(mode="json"),
            "size": size, "latency": lat, "accuracy": {"dataset": "eval.npz", "n": 70, "top1": acc},
            "fidelity": {"n": 70, "mean_cosine": 0.999, "min_cosine": 0.99, "max_abs_error": 0.01,
                         "top1_agreement": 1.0, "input_kind": "dataset", "dataset": "eval.npz"},
            "metrics": {}, "notes": [f"{step_id} note"], "warnings": [], "tables": {}, "flags": [],
            "duration_s": 0.5, "cached": False}


@pytest.fixture
def fake_run(mlp, mlp_onnx, tmp_path):
    """A finished run folder: original = the torch archive, s1 = ONNX (final)."""
    from slimline.core.models import open_model

    path, data = mlp
    orig, final = open_model(path), open_model(mlp_onnx[0])
    run = tmp_path / "ws" / "runs" / "20260101-000000-abcdef"
    run.mkdir(parents=True)
    s1 = _result("s1", "Convert to ONNX", "builtin.convert_onnx", final, 0.93, 0.05)
    s1["flags"], s1["warnings"] = ["bigger"], ["bigger on disk: test warning"]
    record = {
        "run_id": run.name, "created": "2026-01-01T00:00:00", "status": "done",
        "pipeline": {"format": "slimline.pipeline", "schema_version": 1, "name": "test pipeline",
                     "steps": [{"id": "s1", "plugin": "builtin.convert_onnx", "plugin_version": "1",
                                "enabled": True, "params": {"opset": 18}}],
                     "evaluation": {"data": str(data), "budgets": {"max_accuracy_drop": 0.01}}},
        "model": orig.model_dump(mode="json"), "data": {"eval": str(data), "train": None},
        "environment": {"cpu": "test CPU", "cores_usable": 2, "os": "Linux", "python": "3.11",
                        "versions": {"numpy": "x"}},
        "results": [_result("original", "Original (mlp.safetensors)", "", orig, 0.93, 0.08), s1],
        "error": None, "final_model": final.model_dump(mode="json"),
    }
    (run / "run.json").write_text(json.dumps(record))
    return run
