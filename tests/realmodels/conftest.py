"""Skip `real` tests whose models or datasets are not in the real-model cache (they come from `make realmodels`)."""
from __future__ import annotations

import pytest

from .fetch import ENTRIES, cache_root, model_path, verified

_VERIFIED: dict[str, bool] = {}


def _check(model_id: str) -> None:
    model = ENTRIES.get(model_id)
    if model is None:
        pytest.fail(f"@pytest.mark.real names unknown corpus entry {model_id!r} (see tests/realmodels/manifest.py)")
    path = model_path(model)
    if not path.exists():
        pytest.skip(f"real corpus entry {model_id} is not in the cache {cache_root()}; run `make realmodels`")
    if model_id not in _VERIFIED:
        _VERIFIED[model_id] = verified(model)
    if not _VERIFIED[model_id]:
        pytest.fail(f"cached real corpus entry {path} does not match its sha256 in the manifest; "
                    "run `make realmodels` to fetch it again")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers(name="real"):
        for model_id in mark.args:
            _check(model_id)
