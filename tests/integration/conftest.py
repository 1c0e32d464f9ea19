import numpy as np
import pytest


@pytest.fixture
def tiny_torch_model(tmp_path):
    """A small trained-looking MLP as a Slimline archive, plus a labelled eval set."""
    import torch

    from slimline.core.handle import TensorSpec
    from slimline.core.torchmodel import save_torch_module

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    path = tmp_path / "mlp.safetensors"
    save_torch_module(model, path, inputs=[TensorSpec(name="x", shape=["batch", 16])],
                      outputs=[TensorSpec(name="y", shape=["batch", 4])])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 16)).astype(np.float32)
    with torch.no_grad():
        labels = model(torch.from_numpy(x)).argmax(1).numpy()
    data = tmp_path / "eval.npz"
    np.savez(data, x=x, labels=labels)
    return path, data
