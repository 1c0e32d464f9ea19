"""A GGUF's first open dequantizes in a child process with a progress dialog and Cancel; the window stays live."""
from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from tests.core import modelfiles as mf
from tests.lm.gguf_files import write_llama_gguf


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gguf-gui")
    return write_llama_gguf(mf.hf_llama(root / "llama"), root / "tiny.gguf", types={"blk.0.attn_q.weight": "Q8_0"})


@pytest.fixture(autouse=True)
def gguf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "gguf-cache"
    monkeypatch.setenv("SLIMLINE_GGUF_CACHE", str(cache))   # the child process inherits it
    return cache


def test_first_open_is_a_job_with_progress(window, qtbot, gguf_file, gguf_cache) -> None:  # noqa: ANN001
    seen: list[tuple[float, str]] = []
    window.ctl.open_progress.connect(lambda f, t: seen.append((f, t)))
    with qtbot.waitSignal(window.model_opened, timeout=120000):
        window.open_model(str(gguf_file))
        qtbot.waitUntil(lambda: window.open_progress is not None, timeout=10000)
        assert window.open_progress.isVisible() and "tiny.gguf" in window.open_progress.labelText()
    fractions = [f for f, _ in seen]
    assert fractions[-1] < 0 and any(f > 0 for f in fractions)       # progress, then the end
    assert any("dequantizing" in t for _, t in seen)
    assert window.open_progress is None                               # the dialog is gone
    assert window.session.handle.meta["gguf_file"] == str(gguf_file)
    assert any("dequantized from GGUF tiny.gguf" in n for n in window.session.handle.notes)
    # the second open finds the cached folder: no job, no dialog
    seen.clear()
    with qtbot.waitSignal(window.model_opened, timeout=60000):
        window.open_model(str(gguf_file))
    assert seen == []


def test_cancel_leaves_no_model_and_nothing_in_the_cache(window, qtbot, gguf_file, gguf_cache) -> None:  # noqa: ANN001
    ends: list[float] = []
    window.ctl.open_progress.connect(lambda f, _t: ends.append(f) if f < 0 else None)
    window.open_model(str(gguf_file))
    qtbot.waitUntil(lambda: window.open_progress is not None, timeout=10000)
    from PySide6.QtWidgets import QPushButton

    qtbot.mouseClick(window.open_progress.findChild(QPushButton), Qt.MouseButton.LeftButton)  # Cancel
    qtbot.waitUntil(lambda: bool(ends), timeout=30000)
    assert window.session.handle is None and not window.ctl.opening
    assert not gguf_cache.exists() or not any(gguf_cache.iterdir())


def test_partial_build_of_a_killed_process_is_removed(tmp_path: Path) -> None:
    from slimline.core.models.gguf import remove_partial_builds

    root = tmp_path / "cache"
    (root / ".tmp-m-abc-4242").mkdir(parents=True)
    (root / ".tmp-m-abc-4242" / "model.safetensors").write_bytes(b"half")
    (root / ".tmp-m-abc-777").mkdir()
    (root / "m-abc").mkdir()
    remove_partial_builds(4242, root)
    assert sorted(p.name for p in root.iterdir()) == [".tmp-m-abc-777", "m-abc"]
