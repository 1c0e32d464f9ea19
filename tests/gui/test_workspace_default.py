"""One owner for the default workspace: the app falls back to the engine's default (as the CLI does)."""
from __future__ import annotations

from pathlib import Path

from slimline.core.history import default_workspace
from slimline.gui.settings import Preferences


def test_unset_workspace_is_the_engines_default(monkeypatch, tmp_path):
    monkeypatch.delenv("SLIMLINE_WORKSPACE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    prefs = Preferences(workspace="")
    assert prefs.workspace_path() == default_workspace()
    monkeypatch.setenv("SLIMLINE_WORKSPACE", str(tmp_path / "ws"))
    assert prefs.workspace_path() == default_workspace() == tmp_path / "ws"


def test_chosen_workspace_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("SLIMLINE_WORKSPACE", str(tmp_path / "env"))
    assert Preferences(workspace=str(tmp_path / "mine")).workspace_path() == Path(tmp_path / "mine")
