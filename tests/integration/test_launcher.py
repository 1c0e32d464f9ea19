"""The `slimline` command (slimline.gui.launcher): window without a subcommand, engine CLI with one."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from slimline.gui import launcher


@pytest.fixture
def opened(monkeypatch):
    """Record GUI starts instead of opening a window."""
    calls: list[dict] = []

    def fake_open(model=None, demo=False, pipeline=None):
        calls.append({"model": model, "demo": demo, "pipeline": pipeline})
        return 0

    monkeypatch.setattr(launcher, "open_gui", fake_open)
    return calls


@pytest.mark.parametrize("argv, expected", [
    ([], {"model": None, "demo": False, "pipeline": None}),
    (["--demo"], {"model": None, "demo": True, "pipeline": None}),
    (["model.onnx"], {"model": "model.onnx", "demo": False, "pipeline": None}),
    (["gui", "m.onnx", "--pipeline", "p.json"], {"model": "m.onnx", "demo": False, "pipeline": "p.json"}),
    (["gui", "--demo"], {"model": None, "demo": True, "pipeline": None}),
])
def test_no_subcommand_or_a_model_path_opens_the_window(opened, argv, expected):
    assert launcher.main(argv) == 0
    assert opened == [expected]


def test_a_subcommand_runs_the_engine_cli(opened, capsys):
    assert launcher.main(["plugins", "--json"]) == 0
    assert "builtin.convert_onnx" in {p["id"] for p in json.loads(capsys.readouterr().out)}
    assert opened == []


def test_help_lists_engine_subcommands_and_gui(opened, capsys):
    with pytest.raises(SystemExit) as e:
        launcher.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ("inspect", "run", "bench", "plugins", "export", "report", "gui"):
        assert f"    {name} " in out, name
    assert opened == []


def test_engine_cli_has_no_gui_subcommand():
    from slimline.core.cli import command_names

    assert "gui" not in command_names() and "export" in command_names() and "report" in command_names()


def test_without_a_display_it_says_how_to_run_headless():
    if sys.platform in ("win32", "darwin"):
        pytest.skip("desktop platforms always have a display")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    code = ("import sys\nfrom slimline.gui.launcher import main\nrc = main([])\n"
            "print(rc, 'PySide6' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.split() == ["2", "False"], out.stderr
    assert "slimline run --demo" in out.stderr


def test_module_entry_point_version():
    out = subprocess.run([sys.executable, "-m", "slimline.gui.launcher", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("slimline ")
