"""The plugin contract every compression step follows (built-in or third-party).

A plugin declares itself as data (id, formats, a pydantic ``Params`` model) so
the GUI can render a form from the JSON schema and the pipeline can be checked
before anything runs. ``run`` gets a :class:`StepContext` with progress,
cancel, a work dir and the data, and returns a :class:`StepOutput`.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from slimline.core.errors import Cancelled
from slimline.core.handle import Family, ModelHandle

Category = Literal["prune", "quantize", "distill", "lowrank", "convert", "other"]


class PluginParams(BaseModel):
    """Base for every plugin's parameters: frozen, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass
class Problem:
    """A pre-flight finding. ``field`` names the parameter it is about, if any."""

    message: str
    severity: Literal["error", "warning"] = "error"
    field: str = ""
    fix: str = ""

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        fix = f" ({self.fix})" if self.fix else ""
        return f"{where}{self.message}{fix}"


class CancelToken:
    """Cooperative cancel flag; backed by a multiprocessing Event inside jobs."""

    def __init__(self, event: Any | None = None) -> None:
        self._event = event if event is not None else threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()


@dataclass
class StepOutput:
    """What a step produced: the new model plus what it measured and why."""

    model: ModelHandle
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class StepContext:
    """Everything a running step may use. Plugins never talk to the GUI directly."""

    work_dir: Path
    cancel: CancelToken = field(default_factory=CancelToken)
    progress_cb: Callable[[float, str], None] | None = None
    event_cb: Callable[[str, dict[str, Any]], None] | None = None
    data: Any = None            # slimline.core.data.DataBundle | None
    source_model: ModelHandle | None = None  # the pipeline's input model (teacher for KD)
    device: str = "cpu"
    threads: int | None = None
    seed: int = 0
    evaluation: Any = None      # the pipeline's Evaluation settings (task override, budgets) | None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("slimline.step"))

    def progress(self, fraction: float, message: str = "") -> None:
        if self.progress_cb is not None:
            self.progress_cb(max(0.0, min(1.0, float(fraction))), message)

    def emit(self, kind: str, **payload: Any) -> None:
        """Custom event (e.g. ``emit("loss", epoch=1, batch=3, value=0.2)``) for live charts."""
        if self.event_cb is not None:
            self.event_cb(kind, payload)

    def log(self, message: str) -> None:
        self.logger.info(message)
        self.emit("log", message=message)

    def output_path(self, filename: str) -> Path:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return self.work_dir / filename


class Plugin:
    """Base class. Subclasses set the ClassVars and implement ``check`` and ``run``."""

    id: ClassVar[str]
    version: ClassVar[str] = "1"
    title: ClassVar[str]
    category: ClassVar[Category] = "other"
    description: ClassVar[str] = ""
    input_formats: ClassVar[tuple[Family, ...]] = ("onnx",)
    output_format: ClassVar[Family] = "onnx"
    Params: ClassVar[type[PluginParams]] = PluginParams
    # Which data the step needs: any of "calibration", "train", "eval".
    needs_data: ClassVar[tuple[str, ...]] = ()
    # True when the output has the input's family (e.g. magnitude pruning of torch or ONNX).
    preserves_format: ClassVar[bool] = False

    def check(self, model: ModelHandle, params: PluginParams) -> list[Problem]:
        """Cheap pre-flight; the default checks the format family only."""
        return self.check_format(model)

    def check_format(self, model: ModelHandle) -> list[Problem]:
        if model.family not in self.input_formats:
            fix = ""
            if "onnx" in self.input_formats and model.family == "torch":
                fix = "insert 'Convert to ONNX' before this step"
            elif model.family == "weights":
                fix = "open a model with an architecture (ONNX, TorchScript, HF folder, Slimline archive)"
            return [Problem(
                f"accepts {', '.join(self.input_formats)} models, got {model.family} ({model.format})",
                fix=fix,
            )]
        if not model.capabilities.compress and self.category != "other":
            return [Problem(model.capabilities.reason or "this model cannot be compressed")]
        return []

    def run(self, model: ModelHandle, params: PluginParams, ctx: StepContext) -> StepOutput:
        raise NotImplementedError

    @classmethod
    def info(cls) -> dict[str, Any]:
        """Plugin description as data (for `slimline plugins`, the palette, docs)."""
        return {
            "id": cls.id, "version": cls.version, "title": cls.title, "category": cls.category,
            "description": cls.description, "input_formats": list(cls.input_formats),
            "output_format": "same as input" if cls.preserves_format else cls.output_format,
            "needs_data": list(cls.needs_data),
            "params_schema": cls.Params.model_json_schema(),
        }
