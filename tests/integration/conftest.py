import pytest


@pytest.fixture
def tiny_torch_model(make_tiny_mlp):
    return make_tiny_mlp()
