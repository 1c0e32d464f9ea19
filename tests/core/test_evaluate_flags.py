"""A step that makes the model bigger, slower or less accurate is flagged with the reason."""
from slimline.core.evaluate import flags_for
from slimline.core.pipeline import Evaluation


def _ev(bytes_=1000, p50=1.0, p90=1.1, top1=0.99, cos=None):
    ev = {"size": {"bytes_on_disk": bytes_}, "latency": {"1": {"p50_ms": p50, "p90_ms": p90}}}
    if top1 is not None:
        ev["accuracy"] = {"top1": top1, "n": 449, "dataset": "digits_eval.npz"}
    if cos is not None:
        ev["fidelity"] = {"mean_cosine": cos}
    return ev


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
