"""Sensitivity results in the workspace, keyed by content (model bytes, evaluation rows, settings).

``<workspace>/sensitivity/<key>.json``: the same model, data and settings give the same key, so the
window, the CLI and a search reuse one analysis; anything that changes the numbers changes the key.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from slimline.core.cache import canonical
from slimline.core.fsutil import atomic_write_text
from slimline.core.pipeline import Evaluation
from slimline.core.sensitivity.models import FORMAT, VERSION, SensitivityResult, SensitivitySettings


def cache_key(model_hash: str, data_hash: str, settings: SensitivitySettings, evaluation: Evaluation) -> str:
    from slimline.core import __version__
    from slimline.core.registry import get_plugin

    try:
        plugin_version = get_plugin(settings.step).version
    except Exception:  # noqa: BLE001 - an unknown step fails later with a clear message
        plugin_version = "?"
    doc = {"format": FORMAT, "v": VERSION, "slimline": __version__, "model": model_hash, "data": data_hash,
           "settings": settings.model_dump(mode="json", exclude={"threads"}), "plugin_version": plugin_version,
           "task": evaluation.task, "budgets": evaluation.budgets.model_dump(mode="json")}
    return hashlib.sha256(canonical(doc).encode()).hexdigest()[:32]


def folder(workspace: Path) -> Path:
    return Path(workspace) / "sensitivity"


def load(workspace: Path, key: str) -> SensitivityResult | None:
    p = folder(workspace) / f"{key}.json"
    if not p.is_file():
        return None
    try:
        return SensitivityResult.model_validate(json.loads(p.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def save(workspace: Path, result: SensitivityResult) -> Path:
    p = folder(workspace) / f"{result.cache_key}.json"
    atomic_write_text(p, json.dumps(result.model_dump(mode="json"), indent=1))
    return p


__all__ = ["cache_key", "folder", "load", "save"]
