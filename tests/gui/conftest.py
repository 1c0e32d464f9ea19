"""GUI test fixtures: offscreen Qt, isolated settings/workspace, tiny models and plugins."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from typing import Any, ClassVar, Literal  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from pydantic import Field  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, qapp, monkeypatch):
    """Each test gets its own QSettings file and workspace; the user's are never touched."""
    from PySide6.QtCore import QCoreApplication, QSettings

    cfg = tmp_path / "qsettings"
    cfg.mkdir()
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(cfg))
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(cfg))
    QCoreApplication.setOrganizationName("SlimlineTest")
    from slimline.gui import settings as st

    monkeypatch.setattr(st, "ORG", "SlimlineTest")
    prefs = st.Preferences()
    prefs.workspace = str(tmp_path / "workspace")
    prefs.save()
    yield prefs


@pytest.fixture
def window(qtbot):
    from slimline.gui.main_window import MainWindow

    win = MainWindow()
    win.ask_unsaved = lambda: "discard"
    qtbot.addWidget(win)
    win.show()
    yield win
    if win.controller.running:
        win.controller.cancel()
        qtbot.waitUntil(lambda: not win.controller.running, timeout=10000)
    from slimline.gui.workers import wait_all

    wait_all(10000)


@pytest.fixture
def tiny_model(make_tiny_mlp):
    return make_tiny_mlp(hidden=64, rows=64)


# --- in-process test plugins (editor tests only: the job's child process cannot see them) -----
from slimline.core.plugin import Plugin, PluginParams, StepOutput  # noqa: E402


class _ScaleParams(PluginParams):
    factor: float = Field(0.5, ge=0.0, le=1.0, description="Multiply every weight by this")
    mode: Literal["all", "linear_only"] = Field("all", description="Which layers")
    keep_bias: bool = Field(True, description="Leave biases alone")
    skip: list[str] = Field(default_factory=list, description="Layer names to skip")
    rounds: int = Field(1, ge=1, le=10, description="How many times")
    epochs_at: list[int] = Field(default_factory=lambda: [1, 2], description="Epochs to act at")


class _ScalePlugin(Plugin):
    id: ClassVar[str] = "test.scale"
    title: ClassVar[str] = "Test scale"
    category: ClassVar[Any] = "prune"
    description: ClassVar[str] = "Scales weights (test)"
    input_formats: ClassVar[tuple] = ("torch", "onnx")
    output_format: ClassVar[Any] = "torch"
    Params: ClassVar[type] = _ScaleParams

    def run(self, model, params, ctx):  # pragma: no cover - never run in GUI tests
        return StepOutput(model=model)


class _OnnxOnlyParams(PluginParams):
    bits: Literal[8, 4] = Field(8, description="Bits")


class _OnnxOnlyPlugin(Plugin):
    id: ClassVar[str] = "test.onnx_only"
    title: ClassVar[str] = "Test ONNX-only quantizer"
    category: ClassVar[Any] = "quantize"
    input_formats: ClassVar[tuple] = ("onnx",)
    output_format: ClassVar[Any] = "onnx"
    Params: ClassVar[type] = _OnnxOnlyParams


class _NoParamsPlugin(Plugin):
    id: ClassVar[str] = "test.noop"
    title: ClassVar[str] = "Test no-op"
    category: ClassVar[Any] = "other"
    input_formats: ClassVar[tuple] = ("torch", "onnx")
    output_format: ClassVar[Any] = "torch"


TEST_PLUGINS = (_ScalePlugin, _OnnxOnlyPlugin, _NoParamsPlugin)


@pytest.fixture
def test_plugins():
    """Register the test plugins for one test and remove them afterwards."""
    from slimline.core import registry

    for cls in TEST_PLUGINS:
        registry.register(cls)
    yield {cls.id: cls for cls in TEST_PLUGINS}
    for cls in TEST_PLUGINS:
        registry._extra.pop(cls.id, None)
    registry.discover.cache_clear()


def send_drop(widget, mime, point):
    """DragEnter then Drop, as Qt delivers them (a Drop without an accepted enter is ignored)."""
    import warnings

    from PySide6.QtCore import Qt
    from PySide6.QtGui import QDragEnterEvent, QDropEvent
    from PySide6.QtWidgets import QApplication

    with warnings.catch_warnings():  # PySide marks the QPoint constructor deprecated; it is the only one
        warnings.simplefilter("ignore", DeprecationWarning)
        enter = QDragEnterEvent(point.toPoint(), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                                Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    drop = QDropEvent(point, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)
    return drop


def drop_paths(widget, paths, pos=None):
    """Send a real QDropEvent with file URLs to ``widget`` (as a file manager would)."""
    from PySide6.QtCore import QMimeData, QPointF, QUrl

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    return send_drop(widget, mime, pos or QPointF(widget.width() / 2, widget.height() / 2))


@pytest.fixture
def make_onnx_mlp(tmp_path):
    """Builder: a small ONNX MLP (``features`` inputs) plus labelled eval data that fits it."""
    def build(features: int = 16, name: str = "mlp"):
        import warnings

        import torch

        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(features, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).eval()
        path = tmp_path / f"{name}.onnx"
        with warnings.catch_warnings():  # the legacy exporter is deprecated, and fast: fine for a fixture
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.zeros(2, features),), str(path), input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
        x = np.random.default_rng(0).normal(size=(48, features)).astype(np.float32)
        with torch.no_grad():
            labels = net(torch.from_numpy(x)).argmax(1).numpy()
        data = tmp_path / f"{name}-eval.npz"
        np.savez(data, x=x, labels=labels)
        return path, data

    return build


_LATENCY_DEFAULTS = {"mean_ms": 0.0, "std_ms": 0.0, "min_ms": 0.0, "max_ms": 0.0, "spread": 0.0, "runs": 1,
                     "warmup": 0, "threads": 1, "provider": "CPUExecutionProvider", "device_name": "cpu",
                     "batch": 1, "input_shapes": {}, "input_kind": "dataset"}


def typed_result(doc: dict):
    """A StepResult from a short test dict: the fields a view reads, the required rest filled in."""
    from slimline.core.results import StepResult

    sid = doc.get("step_id", "s")
    full = {"model": {"path": f"/tmp/{sid}.onnx", "format": "onnx", "family": "onnx"}, **doc}
    full["size"] = {"param_count": 1, **(doc.get("size") or {"bytes_on_disk": 0})}
    if doc.get("latency"):
        full["latency"] = {b: {**_LATENCY_DEFAULTS, "p90_ms": rep["p50_ms"], **rep}
                           for b, rep in doc["latency"].items()}
    return StepResult.model_validate(full)


@pytest.fixture
def as_result():
    """``as_result(dict) -> StepResult`` for views that take the engine's typed results."""
    return typed_result
