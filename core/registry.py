"""Plugin discovery via the ``slimline.plugins`` entry-point group.

Built-ins are registered the same way as third-party plugins. Loading is lazy
(entry points are listed without importing) and a plugin that fails to import
is kept with its error instead of stopping the app.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points

from slimline.core.errors import PipelineError
from slimline.core.plugin import Plugin

GROUP = "slimline.plugins"
# Comma-separated "module:Class" plugins to load without packaging them (plugin
# development, tests). Inherited by job worker processes.
EXTRA_ENV = "SLIMLINE_EXTRA_PLUGINS"


@dataclass
class PluginEntry:
    id: str
    target: str
    plugin: type[Plugin] | None = None
    error: str = ""
    distribution: str = ""

    @property
    def ok(self) -> bool:
        return self.plugin is not None


_extra: dict[str, type[Plugin]] = {}


def register(plugin: type[Plugin]) -> None:
    """Register a plugin class at run time (tests, scripts)."""
    _extra[plugin.id] = plugin
    discover.cache_clear()


@lru_cache(maxsize=1)
def discover() -> dict[str, PluginEntry]:
    """All plugins by id; broken ones carry their import error."""
    found: dict[str, PluginEntry] = {}
    for ep in entry_points(group=GROUP):
        dist = getattr(getattr(ep, "dist", None), "name", "") or ""
        entry = PluginEntry(id=ep.name, target=ep.value, distribution=dist)
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Plugin)):
                raise TypeError(f"{ep.value} is not a slimline Plugin subclass")
            if cls.id != ep.name:
                raise ValueError(f"entry point name {ep.name!r} differs from plugin id {cls.id!r}")
            entry.plugin = cls
        except Exception as exc:  # a broken plugin must never stop the app
            entry.error = f"{type(exc).__name__}: {exc}"
        found[entry.id] = entry
    for target in filter(None, os.environ.get(EXTRA_ENV, "").split(",")):
        found.update(_load_target(target.strip()))
    for pid, cls in _extra.items():
        found[pid] = PluginEntry(id=pid, target=f"{cls.__module__}:{cls.__name__}", plugin=cls)
    return found


def _load_target(target: str) -> dict[str, PluginEntry]:
    module, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
        if not (isinstance(cls, type) and issubclass(cls, Plugin)):
            raise TypeError(f"{target} is not a slimline Plugin subclass")
        return {cls.id: PluginEntry(id=cls.id, target=target, plugin=cls)}
    except Exception as exc:
        return {target: PluginEntry(id=target, target=target, error=f"{type(exc).__name__}: {exc}")}


def get_plugin(plugin_id: str) -> type[Plugin]:
    entry = discover().get(plugin_id)
    if entry is None:
        raise PipelineError(f"unknown plugin {plugin_id!r}",
                            hint="run `slimline plugins` to list installed plugins")
    if entry.plugin is None:
        raise PipelineError(f"plugin {plugin_id!r} failed to load: {entry.error}",
                            hint="reinstall or update the package that provides it")
    return entry.plugin
