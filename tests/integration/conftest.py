import os
import textwrap

import pytest


@pytest.fixture
def tiny_torch_model(make_tiny_mlp):
    return make_tiny_mlp()


@pytest.fixture
def extra_plugins(tmp_path, monkeypatch):
    """Register test-only plugins from source, for this process and the job's child process.

    Call ``extra_plugins(module_name, source, "Class1", "Class2", ...)``; the registry is reset
    before and after the test so no other test sees them.
    """
    from slimline.core.registry import discover

    def register(module: str, source: str, *classes: str) -> None:
        folder = tmp_path / "plugmod"
        folder.mkdir(exist_ok=True)
        (folder / f"{module}.py").write_text(textwrap.dedent(source))
        monkeypatch.setenv("PYTHONPATH", f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        monkeypatch.setenv("SLIMLINE_EXTRA_PLUGINS", ",".join(f"{module}:{c}" for c in classes))
        monkeypatch.syspath_prepend(str(folder))
        discover.cache_clear()

    yield register
    discover.cache_clear()
