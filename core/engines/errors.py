"""Errors of the engine layer: a bad grid value, an engine that is not installed or not reachable."""
from __future__ import annotations

from slimline.core.errors import SlimlineError

RAY_INSTALL_HINT = "install the Ray engine with `pip install slimline[ray]` (or use --engine local)"


class GridError(SlimlineError):
    """A ``--grid STEP.PARAM=V1,V2`` entry names no step or parameter, or a value the step refuses."""


class EngineError(SlimlineError):
    """An engine cannot run here: not installed, cluster not reachable, bad options."""
