"""Fault-suite fixtures: a tiny torch model + data, and the fault plugins visible to job workers."""
from __future__ import annotations

import os
from pathlib import Path

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
def tiny(make_tiny_mlp):
    return make_tiny_mlp()


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
