"""The run table shows a step's latency against its input (same session) and says NOISY, not a bare ratio."""
import io
import json
from pathlib import Path

from slimline.core.metrics import LatencyComparison
from slimline.core.render import print_run, result_rows
from slimline.core.results import run_from_dict

V1 = Path(__file__).parent / "fixtures" / "run_v1_demo.json"


def _record(noisy: bool):
    record = run_from_dict(json.loads(V1.read_text()))
    step = record.results[1]
    rep = next(iter(step.latency.values()))
    cmp = LatencyComparison(ratio=0.79, low=0.32, high=82.0, blocks=6, runs_per_block=9, input_p50_ms=45.0,
                            noisy=noisy, noise_reasons=["machine busy: load 6.4 on 2 cores"] if noisy else [])
    for b in list(step.latency):
        step.latency[b] = rep.model_copy(update={"p50_ms": 208.0, "vs_input": cmp, "noisy": noisy})
    step.flags = ["noisy"] if noisy else []
    r0 = next(iter(record.results[0].latency.values()))
    for b in list(record.results[0].latency):
        record.results[0].latency[b] = r0.model_copy(update={"measured_at": "2026-11-29T13:39:07", "load_avg": 5.6,
                                                             "load_avg_after": 6.2, "others_busy_cores": 1.6})
    return record


def test_noisy_step_shows_interleaved_ratio_with_a_question_mark_and_no_ratio_to_the_original():
    _, rows = result_rows(_record(noisy=True))
    cell = rows[1][4]
    assert cell.startswith("208.000 (0.79×? vs in)") and rows[1][-1] == "NOISY"
    assert "×)" not in cell  # the 140×-style ratio to the original's earlier figure is gone
    buf = io.StringIO()
    print_run(_record(noisy=True), out=buf)
    assert "load 5.6→6.2 on" in buf.getvalue() and "other processes busy on 1.6 cores" in buf.getvalue()


def test_quiet_step_shows_the_interleaved_ratio():
    _, rows = result_rows(_record(noisy=False))
    assert rows[1][4] == "208.000 (0.79× vs in)" and rows[1][-1] == "ok"
