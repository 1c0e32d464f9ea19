"""The plugin contract (DESIGN §4) over every plugin pyproject.toml registers: declared as data, parameters
that render as a form and survive JSON, a pre-flight that answers a wrong model with a problem, not a crash.

The list comes from pyproject.toml, not from the installed metadata, so a plugin added to the checkout is
checked before the environment is reinstalled (it is registered for the test's duration only).
"""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from slimline.core.handle import ModelHandle
from slimline.core.plugin import Plugin, Problem

ROOT = Path(__file__).resolve().parents[2]
CATEGORIES = {"prune", "quantize", "distill", "lowrank", "convert", "other"}


def _declared() -> dict[str, str]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return dict(doc["project"]["entry-points"]["slimline.plugins"])


DECLARED = _declared()


def _load(target: str) -> type[Plugin]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@pytest.fixture
def registered(monkeypatch):
    """Every declared plugin discoverable by id (the ones the installed metadata lacks added for this test)."""
    from slimline.core import registry

    registry.discover.cache_clear()
    found = registry.discover()
    for pid, target in DECLARED.items():
        if pid not in found or not found[pid].ok:
            monkeypatch.setitem(registry._extra, pid, _load(target))
    registry.discover.cache_clear()
    yield registry
    registry.discover.cache_clear()


def test_every_declared_plugin_is_discovered_by_its_id(registered):
    found = registered.discover()
    for pid in DECLARED:
        assert found[pid].ok, found[pid].error
        assert found[pid].plugin.id == pid
        assert registered.get_plugin(pid) is found[pid].plugin


@pytest.mark.parametrize("pid", sorted(DECLARED))
def test_plugin_declares_itself_as_data(pid):
    cls = _load(DECLARED[pid])
    assert cls.id == pid and "." in pid
    assert cls.title and cls.description and cls.category in CATEGORIES
    assert cls.input_formats and set(cls.input_formats) <= {"onnx", "torch", "weights"}
    assert cls.output_format in ("onnx", "torch", "weights")
    assert set(cls.needs_data) <= {"calibration", "train", "eval"}
    json.dumps(cls.info())


@pytest.mark.parametrize("pid", sorted(DECLARED))
def test_plugin_params_render_and_round_trip(pid):
    cls = _load(DECLARED[pid])
    params = cls.Params()
    schema = cls.Params.model_json_schema()
    json.dumps(schema)
    undocumented = [k for k, v in schema.get("properties", {}).items() if not v.get("description")]
    assert not undocumented, f"{pid}: fields without a description: {undocumented}"
    dumped = params.model_dump(mode="json")
    assert cls.Params.model_validate(json.loads(json.dumps(dumped))) == params
    with pytest.raises(ValidationError):
        cls.Params.model_validate({**dumped, "no_such_field_xyz": 1})
    if cls.Params.model_fields:  # frozen: a step's parameters never change under it
        name = next(iter(cls.Params.model_fields))
        with pytest.raises(ValidationError):
            setattr(params, name, getattr(params, name))


@pytest.mark.parametrize("pid", sorted(DECLARED))
def test_plugin_check_answers_a_model_it_cannot_take_with_a_problem(pid):
    cls = _load(DECLARED[pid])
    other = next((f for f in ("torch", "onnx") if f not in cls.input_formats), None)
    if other is None:
        pytest.skip(f"{pid} accepts both ONNX and torch models")
    fmt = "slimline_torch" if other == "torch" else "onnx"
    handle = ModelHandle(path=f"/nonexistent/model.{'safetensors' if other == 'torch' else 'onnx'}", format=fmt,
                         family=other)
    problems = cls().check(handle, cls.Params())
    assert problems and all(isinstance(p, Problem) for p in problems)
    assert problems[0].severity == "error" and str(problems[0])
