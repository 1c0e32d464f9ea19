"""Fixtures shared by every test folder."""
import numpy as np
import pytest


@pytest.fixture
def make_tiny_mlp(tmp_path):
    """Builder: a small MLP as a Slimline torch archive plus a labelled eval .npz.

    Labels are the model's own predictions, so top-1 of a faithful copy is exactly 1.
    """
    def build(hidden: int = 32, rows: int = 40):
        import torch

        from slimline.core.handle import TensorSpec
        from slimline.core.torchmodel import save_torch_module

        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(16, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 4))
        path = tmp_path / "mlp.safetensors"
        save_torch_module(model, path, inputs=[TensorSpec(name="x", shape=["batch", 16])],
                          outputs=[TensorSpec(name="y", shape=["batch", 4])])
        x = np.random.default_rng(0).normal(size=(rows, 16)).astype(np.float32)
        with torch.no_grad():
            labels = model(torch.from_numpy(x)).argmax(1).numpy()
        data = tmp_path / "eval.npz"
        np.savez(data, x=x, labels=labels)
        return path, data

    return build
