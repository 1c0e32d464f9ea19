"""The issue's failing pipeline, "Convert to ONNX → Quantize: dynamic INT8", on a causal LM."""
from __future__ import annotations

from pathlib import Path

from tests.lm.helpers import run_inline


def test_convert_then_dynamic_int8_runs_and_stays_a_genai_folder(tiny_lm: Path, tiny_text: Path,
                                                                  tmp_path: Path) -> None:
    run = run_inline(tiny_lm, tiny_text, tmp_path / "ws",
                     steps=[{"id": "s1", "plugin": "builtin.convert_onnx", "params": {}},
                            {"id": "s2", "plugin": "builtin.quantize_dynamic", "params": {}}])
    assert run.status == "done", run.error
    s2 = run.results[-1]
    assert s2.step_id == "s2" and s2.lm is not None and s2.lm.vs_original is not None
    out = Path(s2.model.path)
    assert (out.parent / "genai_config.json").is_file() and (out.parent / "tokenizer.json").is_file()
    assert s2.size.bytes_on_disk < 0.6 * run.results[1].size.bytes_on_disk
    assert any("onnx.checker objects" in n or "kept beside the output" in n for n in s2.notes)
