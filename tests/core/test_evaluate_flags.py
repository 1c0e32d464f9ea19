"""A step that makes the model bigger, slower or less accurate is flagged with the reason."""
from slimline.core.evaluate import flags_for
from slimline.core.metrics import LatencyReport
from slimline.core.pipeline import Evaluation
from slimline.core.results import Measurement, StepResult


def _lat(p50, p90):
    return LatencyReport(p50_ms=p50, p90_ms=p90, mean_ms=p50, std_ms=0.0, min_ms=p50, max_ms=p90,
                         spread=(p90 - p50) / p50, runs=5, warmup=1, threads=1, provider="cpu", device_name="cpu",
                         batch=1, input_shapes={"x": [1, 4]}, input_kind="dataset")


def _ev(bytes_=1000, p50=1.0, p90=1.1, top1=0.99, cos=None):
    ev = {"size": {"bytes_on_disk": bytes_, "param_count": 10}, "latency": {"1": _lat(p50, p90)}}
    if top1 is not None:
        ev["accuracy"] = {"top1": top1, "n": 449, "dataset": "digits_eval.npz"}
    if cos is not None:
        ev["fidelity"] = {"n": 8, "mean_cosine": cos, "min_cosine": cos, "max_abs_error": 0.1,
                          "top1_agreement": 1.0, "input_kind": "random", "dataset": "random inputs"}
    return Measurement.model_validate(ev)


def test_clean_step_has_no_flags():
    flags, reasons = flags_for(_ev(500, 0.5, 0.6, 0.99), _ev(), _ev(), Evaluation())
    assert flags == [] and reasons == []


def test_bigger_and_slower_are_flagged_with_figures():
    flags, reasons = flags_for(_ev(2000, 2.0, 2.2), _ev(), _ev(), Evaluation())
    assert flags == ["bigger", "slower"]
    assert "bigger on disk" in reasons[0] and "2.00×" in reasons[1]


def test_noise_within_input_spread_is_not_slower():
    flags, _ = flags_for(_ev(1000, 1.08, 1.2), _ev(p50=1.0, p90=1.3), _ev(), Evaluation())
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
    flags, _ = flags_for(_ev(2000), before, before, Evaluation())
    assert flags == ["bigger"]
