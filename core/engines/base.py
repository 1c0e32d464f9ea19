"""The engine contract and how to pick one by name.

An engine runs independent variants and returns one typed outcome per variant, in
the order given::

    engine = get_engine("ray", address="auto")          # or get_engine("local", workers=2)
    outcomes = engine.map(specs, workspace=ws, on_event=print, cancel=token)

``map`` blocks until every variant ended (done, failed or cancelled); ``on_event`` gets
:class:`VariantEvent` news (queued, started, progress, finished) from the calling
thread; ``cancel`` (a CancelToken) stops the sweep: queued variants are dropped and
running ones cancelled (Ray: ``ray.cancel(force=True)``). A variant whose worker dies
is a failed outcome with the reason; the other variants go on. A KeyboardInterrupt
or SystemExit inside ``map`` cancels every variant before it propagates.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, Protocol

from slimline.core.engines.errors import RAY_INSTALL_HINT, EngineError
from slimline.core.engines.spec import VariantEvent, VariantOutcome, VariantSpec
from slimline.core.plugin import CancelToken

EngineName = Literal["local", "ray"]
ENGINES: tuple[EngineName, ...] = ("local", "ray")
OnEvent = Callable[[VariantEvent], None]


class Engine(Protocol):
    """Runs variants; see the module docstring for the contract."""

    name: str

    def map(self, specs: Sequence[VariantSpec], *, workspace: Path, on_event: OnEvent | None = None,
            cancel: CancelToken | None = None) -> list[VariantOutcome]: ...

    def describe(self) -> str:
        """One line for tables and logs: engine, where, how many workers."""
        ...


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_workers(n_variants: int, cores: int | None = None) -> int:
    """The local pool's size: one variant per core, never more workers than variants."""
    return max(1, min(n_variants or 1, cores or cpu_count()))


def ray_available() -> bool:
    """Whether the Ray engine can be used here (no import: Ray takes seconds to import)."""
    return importlib.util.find_spec("ray") is not None


def engine_problem(name: str) -> str:
    """Why engine ``name`` cannot run here ("" when it can): what the CLI and the dialog say."""
    if name not in ENGINES:
        return f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}"
    if name == "ray" and not ray_available():
        if getattr(sys, "frozen", False):  # the desktop bundle leaves Ray out (installers/bundle_config.py)
            return ("the Ray engine is not part of this desktop bundle: run the sweep from a Python install "
                    "of Slimline with `pip install slimline[ray]`")
        return f"the Ray engine needs the ray package: {RAY_INSTALL_HINT}"
    return ""


def get_engine(name: str = "local", *, workers: int | None = None, address: str | None = None,
               shared_dir: str | None = None) -> Engine:
    """The engine ``name`` with its options; EngineError (with what to install) when it cannot run."""
    problem = engine_problem(name)
    if problem:
        raise EngineError(problem, subject=f"--engine {name}",
                          hint=RAY_INSTALL_HINT if name == "ray" else "use --engine local or --engine ray")
    if workers is not None and workers < 1:
        raise EngineError(f"--workers must be at least 1, got {workers}", subject="--workers")
    if name == "ray":
        from slimline.core.engines.ray_engine import RayEngine

        return RayEngine(address=address, workers=workers, shared_dir=shared_dir)
    if address or shared_dir:
        raise EngineError("--address and --shared-dir are options of the Ray engine", subject="--engine local",
                          hint="add --engine ray, or drop them")
    from slimline.core.engines.local import LocalEngine

    return LocalEngine(workers=workers)
