"""`slimline sensitivity` and `slimline search` from the command line (the job runs in a child process)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from layered_models import OUTLIER_LAYER, save_mlp

from slimline.core.cli import command_names, run


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    handle, data = save_mlp(tmp_path_factory.mktemp("mlp"))
    return Path(handle.path), data


def test_sensitivity_prints_the_ranked_table_and_json(mlp, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model, data = mlp
    args = ["sensitivity", str(model), "--data", str(data), "--step", "quantize_dynamic", "--params",
            '{"per_channel": false}', "--workspace", str(tmp_path), "--threads", "1"]
    assert run([*args, "--json"]) == 0
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert doc["format"] == "slimline.sensitivity" and doc["rows"][0]["layer"] == OUTLIER_LAYER
    assert "%]" in out.err                           # progress went to stderr
    assert run(args) == 0                            # the same settings again: from the cache
    text = capsys.readouterr().out
    assert "cached" in text and "Δ fidelity" in text and "end_metric" in text
    first = next(line for line in text.splitlines() if line.startswith("1 "))
    assert OUTLIER_LAYER in first


def test_search_cli_reports_the_verdict_and_the_run(mlp, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model, data = mlp
    code = run(["search", str(model), "--data", str(data), "--step", "quantize_dynamic", "--params",
                '{"per_channel": false}', "--workspace", str(tmp_path), "--threads", "1", "--max-accuracy-drop",
                "0.02", "--max-candidates", "6"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "budget met" in text and "top-1 drop ≤ 2.00 points" in text and "★" in text
    assert (tmp_path / "runs").is_dir() and len(list((tmp_path / "runs").glob("*/search.json"))) == 1


def test_bad_input_is_a_message_not_a_traceback(mlp, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model, data = mlp
    code = run(["sensitivity", str(model), "--data", str(data), "--step", "builtin.convert_onnx",
                "--workspace", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "error:" in err and "cannot be applied layer by layer" in err and "Traceback" not in err
    assert run(["sensitivity", str(model), "--step", "prune", "--params", "{bad", "--workspace", str(tmp_path)]) == 2


def test_the_subcommands_are_in_the_explicit_table_and_explain_themselves(capsys: pytest.CaptureFixture) -> None:
    assert {"sensitivity", "search"} <= set(command_names())
    for name in ("sensitivity", "search"):
        with pytest.raises(SystemExit) as exc:
            run([name, "--help"])
        assert exc.value.code == 0
        assert "--step" in capsys.readouterr().out
