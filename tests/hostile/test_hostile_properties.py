"""Property-based tests: pipeline-file parsing and plugin params never fail other than cleanly.

parse_pipeline on arbitrary JSON-like documents and on mutations of valid ones, and every
registered plugin's Params.model_validate on arbitrary dicts: the only exceptions allowed are
PipelineError (with a message, subject and — for file-level problems — a hint) and pydantic's
ValidationError. Accepted documents must round-trip through to_json unchanged.

Examples in total: ARBITRARY + MUTATED + PARAMS_PER_PLUGIN × plugins ≥ 10,000 (asserted).
Derandomized so CI runs are reproducible; no example database is written.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from slimline.core.errors import PipelineError
from slimline.core.pipeline import parse_pipeline

ARBITRARY = 4000
MUTATED = 4000
PARAMS_TOTAL = 4000
COUNTS: dict[str, int] = {}
OUTCOMES: dict[str, int] = {"accepted": 0, "refused": 0}

FAST = dict(deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))

KNOWN_KEYS = ["format", "schema_version", "name", "steps", "evaluation", "pipeline", "id", "plugin",
              "plugin_version", "enabled", "params", "type", "data", "train_data", "latency", "budgets", "device",
              "batch_sizes", "runs", "warmup", "threads", "max_accuracy_drop", "min_cosine",
              "placeholder_reason"]
PLUGIN_IDS = ["builtin.convert_onnx", "builtin.quantize_dynamic", "builtin.quantize_static",
              "builtin.quantize_fp16", "builtin.prune_magnitude", "builtin.prune_structured", "builtin.lowrank",
              "builtin.distill", "builtin.quantize_weight_only", "acme.unknown"]

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.sampled_from([0, 1, -1, 2, 17, 2 ** 31, 2 ** 63, -(2 ** 63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(["slimline.pipeline", "builtin.convert_onnx", "QDQ", "MinMax", "auto", "cpu", "cuda",
                     "legacy", "1", "", "s1"] + PLUGIN_IDS),
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)), max_leaves=6)


def _check_accepted(pipe: Any) -> None:
    """An accepted document must survive a save/load round trip unchanged."""
    text = pipe.to_json()
    again = parse_pipeline(json.loads(text))
    assert again.to_json() == text
    for step in pipe.steps:
        assert isinstance(step.params, dict) and isinstance(step.id, str)


def _parse(doc: Any) -> None:
    try:
        pipe = parse_pipeline(doc, source="fuzz.json")
    except PipelineError as exc:
        assert exc.message and exc.subject, exc
        assert "Traceback" not in str(exc)
        OUTCOMES["refused"] += 1
        return
    _check_accepted(pipe)
    OUTCOMES["accepted"] += 1


# ----------------------------------------------------------------------------- arbitrary documents

step_like = st.fixed_dictionaries(
    {}, optional={"id": st.one_of(st.text(max_size=4), scalars),
                  "plugin": st.one_of(st.sampled_from(PLUGIN_IDS), scalars),
                  "plugin_version": scalars, "enabled": scalars,
                  "params": st.one_of(st.dictionaries(keys, scalars, max_size=3), json_values),
                  "type": st.sampled_from(PLUGIN_IDS)})
doc_like = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={
        "format": st.one_of(st.just("slimline.pipeline"), json_values),
        "schema_version": st.one_of(st.sampled_from([0, 1, 2, -1]), json_values),
        "name": scalars, "steps": st.one_of(st.lists(step_like, max_size=2), json_values),
        "pipeline": st.lists(step_like, max_size=2),
        "evaluation": st.one_of(st.fixed_dictionaries({}, optional={
            "data": json_values, "latency": st.dictionaries(st.sampled_from(KNOWN_KEYS[19:23] + ["x"]),
                                                            json_values, max_size=4),
            "budgets": st.dictionaries(st.sampled_from(["max_accuracy_drop", "min_cosine", "y"]), json_values,
                                       max_size=3), "device": json_values}), json_values)}),
)


@settings(max_examples=ARBITRARY, **FAST)
@given(doc_like)
def _prop_arbitrary(doc: Any) -> None:
    COUNTS["arbitrary"] = COUNTS.get("arbitrary", 0) + 1
    _parse(doc)


def test_parse_pipeline_on_arbitrary_documents():
    _prop_arbitrary()
    assert COUNTS["arbitrary"] >= ARBITRARY


# ----------------------------------------------------------------------------- mutations of valid documents


def _valid_documents() -> list[dict[str, Any]]:
    from slimline.core.demo import demo_paths

    fixtures = Path(__file__).resolve().parents[1] / "core" / "fixtures"
    docs = [json.loads(Path(demo_paths()["pipeline"]).read_text())]
    for name in ("pipeline_v0.json", "pipeline_v1.json"):
        if (fixtures / name).is_file():
            docs.append(json.loads((fixtures / name).read_text()))
    docs.append({"format": "slimline.pipeline", "schema_version": 1, "name": "all plugins",
                 "steps": [{"id": f"s{i}", "plugin": pid, "params": {}} for i, pid in enumerate(PLUGIN_IDS)],
                 "evaluation": {"latency": {"batch_sizes": [1, 8], "runs": 3, "warmup": 1, "threads": 1}}})
    for d in docs:
        parse_pipeline(copy.deepcopy(d))  # they really are valid
    return docs


VALID = _valid_documents()


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


mutation_values = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(keys, scalars, max_size=2))


def _mutate(doc: Any, path: tuple, how: str, value: Any, key: Any) -> Any:
    if not path:
        return value if how == "replace" else doc
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    last = path[-1]
    if how == "replace":
        parent[last] = value
    elif how == "delete":
        del parent[last]
    elif how == "insert" and isinstance(parent[last], dict):
        parent[last][key] = value
    elif how == "insert" and isinstance(parent[last], list):
        parent[last].append(value)
    elif how == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[last]))
    elif how == "retype":
        v = parent[last]
        parent[last] = str(v) if not isinstance(v, str) else ([v] if v else 0)
    elif how == "nudge" and isinstance(parent[last], (int, float)) and not isinstance(parent[last], bool):
        parent[last] = parent[last] * value if isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(float(value)) and abs(float(value)) < 1e6 else -parent[last]
    return doc


@settings(max_examples=MUTATED, **FAST)
@given(st.data())
def _prop_mutated(data: Any) -> None:
    COUNTS["mutated"] = COUNTS.get("mutated", 0) + 1
    doc = copy.deepcopy(data.draw(st.sampled_from(VALID)))
    for _ in range(data.draw(st.integers(1, 2))):
        paths = _paths(doc)
        path, how, value, key = data.draw(st.tuples(
            st.sampled_from(paths), st.sampled_from(["replace", "delete", "insert", "duplicate", "retype", "nudge"]),
            mutation_values, keys))
        doc = _mutate(doc, path, how, value, key)
        if not isinstance(doc, (dict, list)):
            break
    _parse(doc)


def test_parse_pipeline_on_mutations_of_valid_documents():
    before = dict(OUTCOMES)
    _prop_mutated()
    assert COUNTS["mutated"] >= MUTATED
    # both paths were exercised: many mutations still parse (and round-trip), many are refused
    assert OUTCOMES["accepted"] - before["accepted"] > MUTATED // 10, OUTCOMES
    assert OUTCOMES["refused"] - before["refused"] > MUTATED // 10, OUTCOMES


# ----------------------------------------------------------------------------- plugin params


def _plugins() -> list[Any]:
    from slimline.core.registry import discover

    return [e.plugin for e in discover().values() if e.plugin is not None]


def _field_values(plugin: Any) -> Any:
    """Values shaped like the plugin's fields (bounds ±, choices, lists) mixed with anything."""
    fields = plugin.Params.model_fields
    names = sorted(fields) or ["x"]
    shaped = st.one_of(json_values, st.floats(-2, 2), st.integers(-3, 300),
                       st.lists(st.sampled_from(["Conv", "MatMul", "Gemm", "fc1", "*", "", "Softmax"]), max_size=4))
    return st.dictionaries(st.one_of(st.sampled_from(names), st.text(max_size=6)), shaped, max_size=len(names) + 1)


@pytest.mark.parametrize("plugin_id", sorted(p.id for p in _plugins()))
def test_plugin_params_validate_or_refuse_cleanly(plugin_id):
    from slimline.core.registry import get_plugin

    plugin = get_plugin(plugin_id)
    n = max(1, PARAMS_TOTAL // len(_plugins()) + 1)
    key = f"params:{plugin_id}"

    @settings(max_examples=n, **FAST)
    @given(_field_values(plugin))
    def prop(params: dict[str, Any]) -> None:
        COUNTS[key] = COUNTS.get(key, 0) + 1
        try:
            p = plugin.Params.model_validate(params)
        except ValidationError as exc:
            assert exc.errors(), exc
            return
        # accepted params serialise to JSON and validate again to the same value
        dumped = p.model_dump(mode="json")
        assert plugin.Params.model_validate(json.loads(json.dumps(dumped))) == p
        assert set(dumped) == set(plugin.Params.model_fields)

    prop()
    assert COUNTS[key] >= n


def test_total_example_count(record_property):
    """Runs last in this module: the examples of the whole module add up to ≥ 10,000."""
    total = sum(COUNTS.values())
    if set(COUNTS) < {"arbitrary", "mutated"} or not any(k.startswith("params:") for k in COUNTS):
        pytest.skip(f"run the whole module to count (have {sorted(COUNTS)})")
    record_property("hypothesis_examples", total)
    print(f"\nhypothesis examples run: {total} ({COUNTS}); pipeline documents {OUTCOMES}")
    assert total >= 10_000, COUNTS
