"""Engines that run many independent variants: a local process pool (default) or a Ray cluster.

The one call for anything that evaluates candidates (``slimline sweep``, the sweep dialog,
the budgeted search)::

    from slimline.core.engines import VariantSpec, get_engine

    base = VariantSpec(pipeline=pipeline, model_path="model.onnx", data_path="eval.npz")
    specs = [base.with_settings({"s1.sparsity": s}) for s in (0.3, 0.5, 0.7)]
    outcomes = get_engine("local").map(specs, workspace=workspace)       # or get_engine("ray", address=...)
    for o in outcomes:
        print(o.label, o.status, o.reason or o.final.size.bytes_on_disk)

``map`` returns one :class:`VariantOutcome` per spec, in order: ``status`` done / failed /
cancelled, ``record`` the run's :class:`~slimline.core.results.RunRecord` (already saved in
the workspace history, so the Results table, the Pareto chart and ``slimline report`` see
it), ``reason``/``hint`` when it did not finish. See :mod:`.base` for events and cancel.
Ray is imported only inside the Ray engine's functions; without it installed,
``get_engine("ray")`` raises an EngineError saying ``pip install slimline[ray]``.
"""
from slimline.core.engines.base import ENGINES, Engine, cpu_count, default_workers, engine_problem, get_engine
from slimline.core.engines.errors import EngineError, GridError
from slimline.core.engines.grid import GridAxis, expand, parse_grid, parse_settings
from slimline.core.engines.spec import VariantEvent, VariantOutcome, VariantSpec, apply_settings, setting_label

__all__ = ["ENGINES", "Engine", "EngineError", "GridAxis", "GridError", "VariantEvent", "VariantOutcome",
           "VariantSpec", "apply_settings", "cpu_count", "default_workers", "engine_problem", "expand", "get_engine",
           "parse_grid", "parse_settings", "setting_label"]
