"""Fixtures of the engine tests: a real two-node Ray cluster on this machine."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """`ray start --head` plus one more node (one CPU each), stopped by process id afterwards."""
    pytest.importorskip("ray", reason="the Ray engine is an optional extra (pip install slimline[ray])")
    from slimline.core.engines.ray_local import LocalRayCluster

    root = tmp_path_factory.mktemp("ray-node-root")
    env = {"SLIMLINE_RAY_ROOT": str(root), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    cluster = LocalRayCluster(nodes=2, cpus_per_node=1, env=env)
    with cluster:
        yield cluster
    assert cluster.processes() == [], "Ray processes left behind"
