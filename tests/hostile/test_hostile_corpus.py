"""Run every hostile case: one clear SlimlineError (or a clean, checked result), nothing written,
nothing executed, the process alive."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import hostile_corpus as hc
import pytest
from hostile_cases import CASES, load_data, load_pipe, open_and_stats

from slimline.core.errors import SlimlineError

DEFAULT_RUN = {"model": open_and_stats, "pipeline": load_pipe, "data": load_data}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            out[str(p)] = (st.st_mtime_ns, st.st_size)
    return out


def run_case(case, tmp_path: Path) -> tuple[str, BaseException | None]:
    """Build, run, check; returns the outcome class name (for the summary)."""
    d = tmp_path / "case"
    d.mkdir()
    target = case.build(d)
    before = snapshot(tmp_path)
    run = case.run or DEFAULT_RUN[case.kind]
    outcome: str
    err: BaseException | None = None
    try:
        result = run(target)
    except SlimlineError as exc:
        err = exc
        outcome = type(exc).__name__
        if case.expect is None:
            raise AssertionError(f"{case.id}: expected a clean result, got {exc}") from exc
    else:
        outcome = "ok"
        if case.expect not in (None, "any"):
            raise AssertionError(f"{case.id}: expected {case.expect}, but it succeeded: {str(result)[:200]}")
        if case.verify is not None:
            case.verify(result)
    if err is not None:
        text = str(err)
        assert case.expect == "any" or outcome in case.expect.split("|"), (
            f"{case.id}: {outcome} != {case.expect}: {text}")
        assert case.needle.lower() in text.lower(), f"{case.id}: {case.needle!r} not in {text!r}"
        where = case.names or target.name
        assert where in err.subject or where in err.message, f"{case.id}: {where!r} not named in {text!r}"
        assert err.hint, f"{case.id}: no next action in {text!r}"
        assert "Traceback" not in text
    assert not hc.canary_path(d).exists(), f"{case.id}: code from the file RAN"
    assert snapshot(tmp_path) == before, f"{case.id}: something was written"
    for escaped in ("ESCAPED_rel.txt", "ESCAPED_abs.txt", "ESCAPED_mid.txt"):
        assert not (tmp_path / escaped).exists() and not (tmp_path.parent / escaped).exists()
    return outcome, err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_case(case, tmp_path):
    if "transformers" in case.tags:
        pytest.importorskip("transformers")
    run_case(case, tmp_path)


def test_corpus_size_and_spread():
    kinds = Counter(c.kind for c in CASES)
    assert len(CASES) >= 60, len(CASES)
    assert kinds["model"] >= 40 and kinds["pipeline"] >= 15 and kinds["data"] >= 15, kinds
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
