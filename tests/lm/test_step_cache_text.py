"""The step cache and text files: an edited text recomputes what read it; `--no-cache` shows fresh figures."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.lm.helpers import run_inline

WANDA = [{"id": "s1", "plugin": "builtin.prune_llm", "plugin_version": "1", "enabled": True,
          "params": {"method": "wanda", "sparsity": 0.5, "calibration_windows": 4, "window_length": 32}}]


@pytest.fixture()
def text(tiny_text: Path, tmp_path: Path) -> Path:
    """A private copy of the corpus: the tests edit it."""
    out = tmp_path / "calib.txt"
    shutil.copyfile(tiny_text, out)
    return out


def _step(record: Any, sid: str = "s1") -> Any:
    return next(r for r in record.results if r.step_id == sid)


def _edit_same_size(path: Path) -> None:
    """Change the text but not its size or modification time: only its content tells."""
    st = path.stat()
    data = path.read_text(encoding="utf-8")
    words = data.split(" ")
    words[:40] = list(reversed(words[:40]))
    path.write_text(" ".join(words), encoding="utf-8")
    assert path.stat().st_size == st.st_size
    import os

    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_edited_calibration_text_recomputes_the_step(tiny_lm: Path, text: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    first = run_inline(tiny_lm, text, ws, WANDA)
    assert not _step(first).cached
    again = run_inline(tiny_lm, text, ws, WANDA)
    assert _step(again).cached  # same model, params and text: reused
    _edit_same_size(text)
    edited = run_inline(tiny_lm, text, ws, WANDA)
    assert not _step(edited).cached, "the step calibrated on the old text and was reused"
    assert _step(edited).lm.perplexity.value != _step(first).lm.perplexity.value


def test_a_text_file_named_in_the_params_is_part_of_the_key(text: Path, tmp_path: Path) -> None:
    from slimline.core.runner import files_fingerprint

    params = {"text_file": str(text), "preset": "int4", "skip": ["a.b"]}
    before = files_fingerprint(params)
    assert before and files_fingerprint({"preset": "int4", "skip": ["."]}) == ""
    _edit_same_size(text)
    assert files_fingerprint(params) != before


def test_edited_prompt_list_is_measured_again(tiny_lm: Path, text: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The quick brown fox\nOnce upon a time\n", encoding="utf-8")
    ws = tmp_path / "ws"
    run_inline(tiny_lm, text, ws, WANDA, prompts=str(prompts))
    prompts.write_text("A completely different prompt\nAnd another\n", encoding="utf-8")
    rec = run_inline(tiny_lm, text, ws, WANDA, prompts=str(prompts))
    step = _step(rec)
    assert not step.cached
    assert [s.prompt for s in step.lm.generation.samples][:1] == ["A completely different prompt"]


def test_no_cache_shows_the_fresh_figures_not_the_old_entry(tiny_lm: Path, text: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    first = run_inline(tiny_lm, text, ws, WANDA)
    entry = Path(_step(first).model.path)
    while entry.parent.name != "cache":
        entry = entry.parent
    meta = entry / "step.json"
    doc = json.loads(meta.read_text())
    doc["metrics"] = {**doc["metrics"], "stale_marker": 12345.0}
    meta.write_text(json.dumps(doc))
    for f in entry.glob("eval-*.json"):  # a stale measurement too
        ev = json.loads(f.read_text())
        ev["lm"]["perplexity"]["value"] = 9999.0
        f.write_text(json.dumps(ev))
    fresh = run_inline(tiny_lm, text, ws, WANDA, use_cache=False)
    step = _step(fresh)
    assert not step.cached
    assert "stale_marker" not in step.metrics, "--no-cache showed the earlier cache entry's metrics"
    assert step.lm.perplexity.value == pytest.approx(_step(first).lm.perplexity.value, rel=1e-4)
    assert "stale_marker" not in json.loads(meta.read_text())["metrics"]  # the entry holds the fresh output
    assert not list((ws / "cache").glob(".tmp-*"))
