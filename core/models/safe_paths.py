"""The one check that keeps a model's side files (ONNX external data) inside the model's folder.

A model is often shared as a folder, and a crafted ``location`` ('../../etc/passwd', an
absolute path, a symlink out) must never make us read files the user did not open. Every
reader of ONNX external data — the engine and the plugins — goes through
:func:`resolve_external`, so there is exactly one place to get this right.
"""
from __future__ import annotations

import os
from pathlib import Path

from slimline.core.errors import ModelLoadError

_HINT = ("external data must sit in the model's folder (or below it); move the .data file next to "
         "the .onnx file and re-save, or re-export the model as one file")


def resolve_external(base_dir: Path, location: str, model_path: Path) -> Path:
    """The external data file for ``location``, refusing anything outside ``base_dir``."""
    def fail(problem: str, hint: str = _HINT) -> ModelLoadError:
        return ModelLoadError(problem, hint=hint, subject=str(model_path))

    loc = Path(location)
    if not location or loc.is_absolute() or location.startswith(("/", "\\")) or ":" in location[:3]:
        raise fail(f"external data location {location!r} is an absolute path")
    if ".." in loc.parts or ".." in location.replace("\\", "/").split("/"):
        raise fail(f"external data location {location!r} points outside the model's folder (it escapes it)")
    target = base_dir / loc
    real_base = os.path.realpath(base_dir)
    real = os.path.realpath(target)
    if os.path.commonpath([real_base, real]) != real_base:
        raise fail(f"external data location {location!r} is a link that leads outside the model's folder")
    if not target.is_file():
        raise fail(f"external data file {location!r} is missing",
                   "copy the .data file(s) that came with the model next to the .onnx file")
    return target
