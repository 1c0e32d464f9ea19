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


def pytest_runtest_setup(item: pytest.Item) -> None:
    """`real` tests outside tests/realmodels are skipped (not cached) or failed (bad checksum) the same way.

    tests/realmodels/conftest.py does it for its own folder; LM tests elsewhere name corpus entries too.
    """
    if "realmodels" in item.path.parts or not any(item.iter_markers(name="real")):
        return
    from tests.realmodels.fetch import ENTRIES, cache_root, model_path, verified

    for mark in item.iter_markers(name="real"):
        for model_id in mark.args:
            entry = ENTRIES.get(model_id)
            if entry is None:
                pytest.fail(f"@pytest.mark.real names unknown corpus entry {model_id!r} (tests/realmodels/manifest.py)")
            if not model_path(entry).exists():
                pytest.skip(f"real corpus entry {model_id} is not in the cache {cache_root()}; run `make realmodels`")
            if not _VERIFIED.setdefault(model_id, verified(entry)):
                pytest.fail(f"cached real corpus entry {model_path(entry)} does not match its sha256 in the manifest; "
                            "run `make realmodels` to fetch it again")


_VERIFIED: dict[str, bool] = {}
