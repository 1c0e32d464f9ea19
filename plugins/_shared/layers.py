"""Which layers a step touches: name patterns, cheap spec listings and the pre-flight checks.

Prune and low-rank steps all take a list of layer names/globs to leave alone and all check,
before running, that the model has layers of the right kind and that the list does not
cover every one of them; the rules (and the parameter's shape) live here once.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import Field

from slimline.core.handle import ModelHandle
from slimline.core.plugin import Problem


def layer_patterns(description: str) -> Any:
    """A ``list[str]`` parameter of layer names or glob patterns (empty by default)."""
    return Field(default_factory=list, description=description)


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    """True when ``name`` equals a pattern, matches it as a glob, or sits under it (``a.b`` under ``a``)."""
    for p in patterns:
        if name == p or fnmatch.fnmatchcase(name, p) or name.startswith(p + "."):
            return True
    return False


def spec_layers(handle: ModelHandle) -> list[tuple[str, str]] | None:
    """(name, type) of the leaves in a spec-based archive, read cheaply; None when unknown."""
    if handle.format != "slimline_torch":
        return None
    try:
        from slimline.core.torchmodel import read_archive_meta

        meta = read_archive_meta(handle.path)
    except Exception:
        return None
    if not meta:
        return None
    base = meta["arch"].get("base", {})
    if base.get("kind") != "spec" or meta["arch"].get("replacements"):
        return None
    found: list[tuple[str, str]] = []

    def walk(tree: dict[str, Any], prefix: str) -> None:
        children = tree.get("children")
        if children is None:
            found.append((prefix, str(tree.get("type"))))
            return
        for n, c in children.items():
            walk(c, f"{prefix}.{n}" if prefix else n)

    walk(base["tree"], "")
    return found


def selection_problems(handle: ModelHandle, kinds: set[str], patterns: Iterable[str], *,
                       none_found: Problem | Callable[[list[tuple[str, str]]], Problem],
                       all_excluded: Problem, keep_last: bool = False) -> list[Problem]:
    """Pre-flight problems of a layer selection, read from a spec archive without loading torch.

    ``kinds``: layer class names the step works on; ``patterns``: the user's skip list;
    ``keep_last``: the last such layer (the one producing the output) is never touched, so
    it does not count; ``none_found`` may be built from the listed (name, type) layers.
    Returns [] when the layers cannot be listed cheaply (non-spec models).
    """
    layers = spec_layers(handle)
    if layers is None:
        return []
    found = [n for n, t in layers if t in kinds]
    if keep_last:
        found = found[:-1]
    if not found:
        return [none_found(layers) if callable(none_found) else none_found]
    patterns = list(patterns)
    if patterns and all(matches_any(n, patterns) for n in found):
        return [all_excluded]
    return []
