"""Structured pruning: channels physically removed, archive reloads identically, output kept."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from slimline.core.errors import Cancelled, StepFailed
from slimline.core.handle import TensorSpec
from slimline.core.plugin import CancelToken, StepContext
from slimline.plugins.prune import StructuredPrune

P = StructuredPrune.Params


def _tiny_cnn_handle(tmp_path: Path):
    import torch
    import torch.nn as nn

    from slimline.core.torchmodel import save_torch_module

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 24), nn.ReLU(), nn.Linear(24, 10)).eval()
    h = save_torch_module(net, tmp_path / "cnn.safetensors",
                          inputs=[TensorSpec(name="x", shape=["batch", 1, 8, 8])],
                          outputs=[TensorSpec(name="y", shape=["batch", 10])])
    return h


def _data(n: int = 64):
    from slimline.core.data import DataBundle, Dataset

    rng = np.random.default_rng(0)
    ds = Dataset(name="toy", source="test", inputs={"x": rng.normal(size=(n, 1, 8, 8)).astype(np.float32)},
                 labels=rng.integers(0, 10, size=n))
    return DataBundle(train=ds, calibration=ds)


def _shapes(path: str) -> dict[str, tuple[int, ...]]:
    from safetensors.numpy import load_file

    return {k: v.shape for k, v in load_file(path).items()}


def test_half_channels_removed_and_reload_identical(tmp_path):
    import torch

    from slimline.core.torchmodel import load_torch_module

    h = _tiny_cnn_handle(tmp_path)
    events: list[tuple[float, str]] = []
    ctx = StepContext(work_dir=tmp_path / "out", progress_cb=lambda f, m: events.append((f, m)))
    out = StructuredPrune().run(h, P(pruning_ratio=0.5, importance="magnitude"), ctx)
    s = _shapes(out.model.path)
    assert s["0.weight"] == (8, 1, 3, 3)
    assert s["3.weight"] == (16, 8, 3, 3)
    assert s["4.running_mean"] == (16,)
    assert s["8.weight"] == (12, 16 * 4 * 4)
    assert s["10.weight"] == (10, 12)          # classifier: inputs pruned, outputs kept
    assert out.model.param_count < 0.35 * h.param_count
    assert out.metrics["params_after"] < out.metrics["params_before"]
    assert out.metrics["macs_after"] < 0.4 * out.metrics["macs_before"]
    assert any(m.startswith("step 1/1: group") for _, m in events)
    assert any("fine-tuned or distilled" in n for n in out.notes)
    # the saved archive rebuilds to exactly the function of a fresh prune of the same model
    x = torch.randn(5, 1, 8, 8)
    reloaded = load_torch_module(out.model)
    assert reloaded(x).shape == (5, 10)
    out2 = StructuredPrune().run(h, P(pruning_ratio=0.5, importance="magnitude"),
                                 StepContext(work_dir=tmp_path / "again"))
    torch.testing.assert_close(load_torch_module(out2.model)(x), reloaded(x))


def test_in_memory_pruned_module_matches_archive(tmp_path):
    """Prune in memory with Torch-Pruning directly; the plugin's archive must give the same outputs."""
    import torch
    import torch_pruning as tp

    from slimline.core.torchmodel import load_torch_module

    h = _tiny_cnn_handle(tmp_path)
    mem = load_torch_module(h)
    ex = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    pr = tp.pruner.MetaPruner(mem, ex, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
                              ignored_layers=[mem[10]], max_pruning_ratio=0.9)
    pr.step()
    out = StructuredPrune().run(h, P(importance="magnitude"), StepContext(work_dir=tmp_path / "o"))
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(load_torch_module(out.model)(x), mem.eval()(x))


def test_round_to_and_ignored_layers(tmp_path):
    h = _tiny_cnn_handle(tmp_path)
    out = StructuredPrune().run(h, P(pruning_ratio=0.3, round_to=8, ignored_layers=["0"], importance="magnitude"),
                                StepContext(work_dir=tmp_path / "o"))
    s = _shapes(out.model.path)
    assert s["0.weight"][0] == 16                  # ignored
    assert s["3.weight"][0] % 8 == 0 and s["3.weight"][0] < 32
    assert s["8.weight"][0] % 8 == 0 and s["8.weight"][0] < 24
    row = next(r for r in out.tables["channels"] if r["layer"] == "0")
    assert row["status"] == "ignored"


def test_taylor_uses_training_data_and_iterative_steps(tmp_path):
    h = _tiny_cnn_handle(tmp_path)
    ctx = StepContext(work_dir=tmp_path / "t", data=_data())
    out = StructuredPrune().run(h, P(importance="auto", iterative_steps=2, taylor_batches=2), ctx)
    assert "taylor importance" in out.notes[0]
    assert _shapes(out.model.path)["3.weight"][0] == 16
    mag = StructuredPrune().run(h, P(importance="magnitude"), StepContext(work_dir=tmp_path / "m"))
    assert _shapes(out.model.path) == _shapes(mag.model.path)  # same widths, other channels chosen
    with pytest.raises(StepFailed, match="importance|labels"):
        StructuredPrune().run(h, P(importance="taylor"), StepContext(work_dir=tmp_path / "none"))


def test_random_importance_is_seeded(tmp_path):
    from safetensors.numpy import load_file

    h = _tiny_cnn_handle(tmp_path)
    a = StructuredPrune().run(h, P(importance="random", seed=1), StepContext(work_dir=tmp_path / "a"))
    b = StructuredPrune().run(h, P(importance="random", seed=1), StepContext(work_dir=tmp_path / "b"))
    wa, wb = load_file(a.model.path), load_file(b.model.path)
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k])


def test_bad_params_and_checks(tmp_path):
    with pytest.raises(ValidationError, match="pruning_ratio"):
        P(pruning_ratio=1.0)
    with pytest.raises(ValidationError, match="importance"):
        P(importance="l3")
    with pytest.raises(ValidationError, match="round_to"):
        P(round_to=-8)
    h = _tiny_cnn_handle(tmp_path)
    assert StructuredPrune().check(h, P()) == []
    probs = StructuredPrune().check(h, P(ignored_layers=["*"]))
    assert probs and probs[0].field == "ignored_layers"
    onnx_like = h.model_copy(update={"family": "onnx", "format": "onnx"})
    assert StructuredPrune().check(onnx_like, P())


def test_cancel_before_run(tmp_path):
    h = _tiny_cnn_handle(tmp_path)
    tok = CancelToken()
    tok.cancel()
    with pytest.raises(Cancelled):
        StructuredPrune().run(h, P(), StepContext(work_dir=tmp_path / "c", cancel=tok))
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())


def test_cancel_during_groups_leaves_no_file(tmp_path):
    h = _tiny_cnn_handle(tmp_path)
    tok = CancelToken()

    def progress(frac: float, msg: str) -> None:
        if "group" in msg:
            tok.cancel()
    with pytest.raises(Cancelled):
        StructuredPrune().run(h, P(importance="magnitude"),
                              StepContext(work_dir=tmp_path / "c", cancel=tok, progress_cb=progress))
    assert not list((tmp_path / "c").glob("*.safetensors"))
