"""A step that makes the model bigger, slower or less accurate is flagged with the reason."""
import numpy as np
import pytest

from slimline.core.evaluate import flags_for
from slimline.core.metrics import LatencyReport, compare_blocks, machine_noise, ratio_interval, sample_noise
from slimline.core.pipeline import Evaluation
from slimline.core.results import Measurement, StepResult


def _lat(p50, p90):
    return LatencyReport(p50_ms=p50, p90_ms=p90, mean_ms=p50, std_ms=0.0, min_ms=p50, max_ms=p90,
                         spread=(p90 - p50) / p50, runs=5, warmup=1, threads=1, provider="cpu", device_name="cpu",
                         batch=1, input_shapes={"x": [1, 4]}, input_kind="dataset")


def _ev(bytes_=100_000, p50=1.0, p90=1.1, top1=0.99, cos=None):
    ev = {"size": {"bytes_on_disk": bytes_, "param_count": 10}, "latency": {"1": _lat(p50, p90)}}
    if top1 is not None:
        ev["accuracy"] = {"top1": top1, "n": 449, "dataset": "digits_eval.npz"}
    if cos is not None:
        ev["fidelity"] = {"n": 8, "mean_cosine": cos, "min_cosine": cos, "max_abs_error": 0.1,
                          "top1_agreement": 1.0, "input_kind": "random", "dataset": "random inputs"}
    return Measurement.model_validate(ev)


def test_clean_step_has_no_flags():
    flags, reasons = flags_for(_ev(50_000, 0.5, 0.6, 0.99), _ev(), _ev(), Evaluation())
    assert flags == [] and reasons == []


def test_bigger_and_slower_are_flagged_with_figures():
    flags, reasons = flags_for(_ev(200_000, 2.0, 2.2), _ev(), _ev(), Evaluation())
    assert flags == ["bigger", "slower"]
    assert "bigger on disk" in reasons[0] and "2.00×" in reasons[1]


def test_noise_within_input_spread_is_not_slower():
    flags, _ = flags_for(_ev(100_000, 1.08, 1.2), _ev(p50=1.0, p90=1.3), _ev(), Evaluation())
    assert "slower" not in flags


def test_accuracy_budget_vs_original_names_dataset_and_n():
    flags, reasons = flags_for(_ev(top1=0.95), _ev(top1=0.99), _ev(top1=0.99), Evaluation())
    assert flags == ["over_budget"]
    assert "digits_eval.npz (n=449)" in reasons[0] and "4.00 points" in reasons[0]


def test_without_labels_the_cosine_budget_applies():
    ev = Evaluation.model_validate({"budgets": {"min_cosine": 0.995}})
    flags, reasons = flags_for(_ev(top1=None, cos=0.98), _ev(top1=None), _ev(top1=None), ev)
    assert flags == ["over_budget"] and "cosine" in reasons[0]


def test_step_results_are_measurements_too():
    """flags_for takes the typed StepResult of the input step as well as a fresh Measurement."""
    handle = {"path": "/m.onnx", "format": "onnx", "family": "onnx"}
    before = StepResult.from_measurement(_ev(), step_id="s1", model=handle)
    flags, _ = flags_for(_ev(200_000), before, before, Evaluation())
    assert flags == ["bigger"]


# ------------------------------------------------------------------ size floor and honest latency


def test_small_size_growth_is_not_bigger():
    """+0.7 % and +1.5 % (the issue's examples) and +3 kB on a small model are not "bigger"; +5 % is."""
    for grown in (100_700, 101_500):
        assert "bigger" not in flags_for(_ev(grown), _ev(100_000), _ev(), Evaluation())[0]
    assert "bigger" not in flags_for(_ev(13_000), _ev(10_000), _ev(), Evaluation())[0]  # +30 % but < 4 kB
    flags, reasons = flags_for(_ev(105_000), _ev(100_000), _ev(), Evaluation())
    assert flags == ["bigger"] and "+5.0 %" in reasons[0] and "4 kB" in reasons[0]


def _blocks(p50s_ms, rng, jitter=0.01, n=20):
    """Synthetic interleaved blocks: ``n`` samples (seconds) around each block's p50."""
    return [np.asarray(p / 1e3 * (1 + jitter * rng.standard_normal(n))) for p in p50s_ms]


def _with_vs_input(cmp, p50):
    m = _ev(p50=p50, p90=p50 * 1.1)
    m.latency["1"] = m.latency["1"].model_copy(update={"vs_input": cmp, "noisy": cmp.noisy})
    return m


def test_interleaved_ratio_and_interval_are_deterministic():
    rng = np.random.default_rng(1)
    a = _blocks([1.0] * 6, rng)
    b = _blocks([2.0] * 6, rng)
    ratio, low, high, per_block = ratio_interval(a, b)
    assert ratio == pytest.approx(2.0, rel=0.02) and low <= ratio <= high and high - low < 0.05
    assert len(per_block) == 6 and (ratio, low, high) == ratio_interval(a, b)[:3]


def test_clear_slowdown_is_slower_with_its_interval():
    rng = np.random.default_rng(2)
    cmp = compare_blocks(_blocks([1.0] * 6, rng), _blocks([1.3] * 6, rng))
    assert cmp.verdict == "slower" and not cmp.noisy and cmp.low > 1.05
    flags, reasons = flags_for(_with_vs_input(cmp, 1.3), _ev(), _ev(), Evaluation())
    assert flags == ["slower"]
    assert reasons[0].startswith("slower at batch 1:") and "interleaved" in reasons[0] and "interval" in reasons[0]


def test_difference_within_the_floor_is_same_not_slower():
    rng = np.random.default_rng(3)
    cmp = compare_blocks(_blocks([1.0] * 6, rng), _blocks([1.03] * 6, rng))
    assert cmp.verdict == "same" and not cmp.noisy
    assert flags_for(_with_vs_input(cmp, 1.03), _ev(), _ev(), Evaluation())[0] == []


def test_blocks_that_disagree_are_noisy_not_slower():
    """A neighbour that comes and goes: per-block ratios straddle 1 widely, so no conclusion."""
    rng = np.random.default_rng(4)
    a = _blocks([1.0, 1.0, 3.0, 1.0, 3.0, 1.0], rng)
    b = _blocks([1.0, 3.0, 1.0, 3.0, 1.0, 3.0], rng)
    cmp = compare_blocks(a, b)
    assert cmp.noisy and cmp.verdict == "inconclusive"
    assert any("both sides" in r for r in cmp.noise_reasons)
    flags, reasons = flags_for(_with_vs_input(cmp, 3.0), _ev(), _ev(), Evaluation())
    assert flags == ["noisy"] and "no slower/faster conclusion" in reasons[0]


def test_busy_machine_marks_comparison_noisy_and_only_a_clear_slowdown_survives():
    rng = np.random.default_rng(5)
    busy = ["other processes kept 3.0 of 2 cores busy while timing (2 threads needed)"]
    mild = compare_blocks(_blocks([1.0] * 6, rng), _blocks([1.2] * 6, rng), noise=busy)
    assert mild.noisy and mild.verdict == "inconclusive"
    assert flags_for(_with_vs_input(mild, 1.2), _ev(), _ev(), Evaluation())[0] == ["noisy"]
    clear = compare_blocks(_blocks([1.0] * 6, rng), _blocks([3.0] * 6, rng), noise=busy)
    assert clear.noisy and clear.verdict == "slower"
    assert flags_for(_with_vs_input(clear, 3.0), _ev(), _ev(), Evaluation())[0] == ["slower", "noisy"]


def test_one_block_gives_no_interval_and_no_conclusion():
    rng = np.random.default_rng(6)
    cmp = compare_blocks(_blocks([1.0], rng), _blocks([2.0], rng))
    assert cmp.noisy and cmp.verdict == "inconclusive"


def test_machine_and_sample_noise_thresholds():
    assert machine_noise(load_before=0.5, load_after=0.7, others_busy_cores=0.1, cores=2, threads=2) == []
    assert "load 5.0" in machine_noise(load_before=1.0, load_after=5.0, others_busy_cores=None, cores=2,
                                       threads=2)[0]
    assert machine_noise(load_before=None, load_after=None, others_busy_cores=2.5, cores=2, threads=2)
    # one thread on 16 cores is not contended by 3 busy neighbours
    assert machine_noise(load_before=3.0, load_after=3.0, others_busy_cores=3.0, cores=16, threads=1) == []
    steady = np.full(50, 1.0)
    assert sample_noise(steady, [1.0, 1.0, 1.01]) == []
    assert "p90" in sample_noise(np.r_[np.full(40, 1.0), np.full(10, 3.0)], [])[0]
    assert "CV" in sample_noise(steady, [1.0, 1.5, 1.0, 1.5])[0]


def test_noisy_or_cached_old_style_reports_are_never_compared():
    """Reports without an interleaved comparison: noisy → "noisy"; cached vs fresh → no ratio at all."""
    busy = _ev(p50=148.0, p90=300.0)
    busy.latency["1"] = busy.latency["1"].model_copy(update={"noisy": True, "noise_reasons": ["machine busy"]})
    flags, _ = flags_for(busy, _ev(p50=1.0, p90=1.1), _ev(), Evaluation())
    assert flags == ["noisy"]
    cached = _ev(p50=148.0, p90=150.0)
    cached.latency["1"] = cached.latency["1"].model_copy(update={"source": "cached from 2026-01-01T00:00:00"})
    assert flags_for(cached, _ev(p50=1.0, p90=1.1), _ev(), Evaluation())[0] == []


def test_old_run_files_still_load():
    """A v2 LatencyReport (no condition fields) validates, with quiet defaults."""
    rep = LatencyReport.model_validate(_lat(1.0, 1.1).model_dump(exclude={
        "measured_at", "load_avg_after", "others_busy_cores", "cv", "block_p50_ms", "noisy", "noise_reasons",
        "source", "vs_input"}))
    assert rep.noisy is False and rep.vs_input is None and rep.source == "fresh"
