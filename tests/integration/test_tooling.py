"""The test command lints: ruff and mypy are configured, pinned and run by `make test` (CI runs make test)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (the standard library's TOML reader)

ROOT = Path(__file__).resolve().parents[2]


def _recipe(makefile: str, target: str) -> list[str]:
    lines = makefile.splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(rf"^{target}:", ln))
    body = []
    for ln in lines[start + 1:]:
        if not ln.startswith("\t"):
            break
        body.append(ln.strip())
    return body


def test_linters_are_configured_pinned_and_run_by_the_test_command():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["ruff"]["line-length"] == 120
    assert {"E", "F", "W", "I", "B", "UP"} <= set(project["tool"]["ruff"]["lint"]["select"])
    assert project["tool"]["mypy"]["python_version"] == "3.11"
    dev = " ".join(project["project"]["optional-dependencies"]["dev"])
    pins = (ROOT / "constraints.txt").read_text()
    for tool in ("ruff", "mypy"):
        assert tool in dev and re.search(rf"^{tool}==\S+", pins, re.M), tool
    make = (ROOT / "Makefile").read_text()
    lint = " ".join(_recipe(make, "lint"))
    assert "ruff check" in lint and "mypy -p slimline.core -p slimline.plugins" in lint
    # gating: a lint failure fails `make test` (no leading "-" that would ignore it)
    assert any(re.search(r"^\$\(MAKE\).* lint$", ln.strip()) for ln in _recipe(make, "test"))
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_entry_point_is_the_launcher_outside_the_engine():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["slimline"] == "slimline.gui.launcher:main"
    assert "slimline.gui.launcher" in (ROOT / "installers" / "slimline_main.py").read_text()
