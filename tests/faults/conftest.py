"""Fault-suite fixtures: a tiny torch model + data, and the fault plugins visible to job workers."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any QApplication exists

HERE = Path(__file__).resolve().parent
PLUGINS = "fault_plugins:Segfault,fault_plugins:Sleepy"


@pytest.fixture
def fault_plugins(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("SLIMLINE_EXTRA_PLUGINS", PLUGINS)
    monkeypatch.syspath_prepend(str(HERE))
    from slimline.core.registry import discover

    discover.cache_clear()
    yield
    discover.cache_clear()


@pytest.fixture
def tiny(tmp_path):
    """(Slimline torch archive of a small MLP, labelled eval .npz)."""
    import torch

    from slimline.core.handle import TensorSpec
    from slimline.core.torchmodel import save_torch_module

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    path = tmp_path / "mlp.safetensors"
    save_torch_module(model, path, inputs=[TensorSpec(name="x", shape=["batch", 16])],
                      outputs=[TensorSpec(name="y", shape=["batch", 4])])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 16)).astype(np.float32)
    with torch.no_grad():
        labels = model(torch.from_numpy(x)).argmax(1).numpy()
    data = tmp_path / "eval.npz"
    np.savez(data, x=x, labels=labels)
    return path, data


@pytest.fixture
def gui_settings(tmp_path, qapp, monkeypatch):
    """Own QSettings file and workspace for one GUI test (the user's are never touched)."""
    from PySide6.QtCore import QCoreApplication, QSettings

    cfg = tmp_path / "qsettings"
    cfg.mkdir()
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(cfg))
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(cfg))
    QCoreApplication.setOrganizationName("SlimlineFaultTest")
    from slimline.gui import settings as st

    monkeypatch.setattr(st, "ORG", "SlimlineFaultTest")
    prefs = st.Preferences()
    prefs.workspace = str(tmp_path / "workspace")
    prefs.save()
    return prefs
