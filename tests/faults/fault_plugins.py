"""Test plugins for the fault suite, loaded through SLIMLINE_EXTRA_PLUGINS (also in job workers)."""
from __future__ import annotations

import time
from typing import ClassVar

from pydantic import Field

from slimline.core.plugin import Plugin, PluginParams, StepOutput


class Segfault(Plugin):
    """The 'runtime session' dereferences NULL: the worker dies with SIGSEGV mid-step."""

    id: ClassVar[str] = "faults.segfault"
    title: ClassVar[str] = "Segfaulting runtime"
    input_formats: ClassVar[tuple] = ("torch", "onnx")
    output_format: ClassVar[str] = "onnx"
    preserves_format: ClassVar[bool] = True

    def run(self, model, params, ctx):
        import ctypes

        (ctx.work_dir / "partial.onnx").write_bytes(b"\x08" * 1000)
        ctx.progress(0.5, "opening the runtime session")
        ctypes.string_at(0)  # SIGSEGV
        return StepOutput(model=model)  # pragma: no cover


class SleepParams(PluginParams):
    seconds: float = Field(30.0, ge=0, le=600, description="How long to work")


class Sleepy(Plugin):
    """Works in small slices, checking cancel, then copies its input (deterministic output)."""

    id: ClassVar[str] = "faults.sleepy"
    title: ClassVar[str] = "Slow copy"
    input_formats: ClassVar[tuple] = ("torch", "onnx")
    output_format: ClassVar[str] = "onnx"
    preserves_format: ClassVar[bool] = True
    Params: ClassVar = SleepParams

    def run(self, model, params, ctx):
        import shutil
        from pathlib import Path

        from slimline.core.fsutil import atomic_path
        from slimline.core.models import open_model

        partial = ctx.work_dir / "partial.bin"
        end = time.monotonic() + params.seconds
        with partial.open("wb") as fh:
            while time.monotonic() < end:
                ctx.cancel.raise_if_cancelled()
                fh.write(b"x" * 1024)
                ctx.progress(1 - (end - time.monotonic()) / max(params.seconds, 1e-9), "working")
                time.sleep(0.02)
        partial.unlink()
        out = ctx.output_path(Path(model.path).name)
        with atomic_path(out) as tmp:
            shutil.copyfile(model.path, tmp)
        return StepOutput(model=open_model(out), notes=[f"slept {params.seconds} s"])
