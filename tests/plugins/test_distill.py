"""Distillation plugin: the loss by hand, real runs on tiny MLPs over sklearn digits (8×8)."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from slimline.core.errors import Cancelled, StepFailed
from slimline.core.handle import TensorSpec
from slimline.core.plugin import CancelToken, StepContext
from slimline.plugins.distill import Distill
from slimline.plugins.distill.loss import distillation_loss

torch = pytest.importorskip("torch")

IN = [TensorSpec(name="x", dtype="float32", shape=["batch", 64])]
OUT = [TensorSpec(name="logits", dtype="float32", shape=["batch", 10])]


class FakeDataset:
    """Minimal stand-in for slimline.core.data.Dataset (only the attributes the plugin uses)."""

    def __init__(self, name: str, inputs: dict[str, np.ndarray], labels: np.ndarray | None) -> None:
        self.name, self.inputs, self.labels, self.kind = name, inputs, labels, "real"

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))


def _mlp(hidden: int) -> "torch.nn.Module":
    return torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    order = np.random.default_rng(1).permutation(len(y))
    tr, te = order[:1300], order[1300:]
    return {"xtr": x[tr], "ytr": y[tr], "xte": x[te], "yte": y[te]}


@pytest.fixture(scope="module")
def models(tmp_path_factory, digits) -> dict[str, object]:
    """A trained teacher MLP (64-64-10) and an untrained student (64-16-10), as Slimline archives."""
    from slimline.core.torchmodel import save_torch_module

    d = tmp_path_factory.mktemp("distill_models")
    torch.manual_seed(0)
    teacher = _mlp(64)
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    x, y = torch.from_numpy(digits["xtr"]), torch.from_numpy(digits["ytr"])
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(teacher(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    teacher.eval()
    torch.manual_seed(1)
    student = _mlp(16).eval()
    return {
        "teacher": save_torch_module(teacher, d / "teacher.safetensors", inputs=IN, outputs=OUT),
        "student": save_torch_module(student, d / "student.safetensors", inputs=IN, outputs=OUT),
        "teacher_module": teacher,
        "dir": d,
    }


def _ctx(tmp_path: Path, digits, models, *, labels: bool = True, events: list | None = None,
         cancel: CancelToken | None = None, on_event=None) -> StepContext:
    ds = FakeDataset("digits 8x8 train", {"x": digits["xtr"]}, digits["ytr"] if labels else None)

    def event_cb(kind: str, payload: dict) -> None:
        if events is not None:
            events.append((kind, payload))
        if on_event is not None:
            on_event(kind, payload)

    return StepContext(work_dir=tmp_path / "work", cancel=cancel or CancelToken(), event_cb=event_cb,
                       data=SimpleNamespace(train=ds, eval=None, calibration=None),
                       source_model=models["teacher"], threads=1)


def _accuracy(handle, x: np.ndarray, y: np.ndarray) -> float:
    from slimline.core.torchmodel import load_torch_module

    m = load_torch_module(handle)
    with torch.no_grad():
        return float((m(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def _sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- the loss against a hand computation -----------------------------------
def _np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


S = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, -0.3]], dtype=np.float64)
T_ = np.array([[1.0, 0.0, 2.0], [-1.0, 3.0, 0.0]], dtype=np.float64)
Y = np.array([0, 1])


def _hand_ce() -> float:
    return float(-_np_log_softmax(S)[np.arange(2), Y].mean())


def _hand_kd(temp: float) -> float:
    p_t = np.exp(_np_log_softmax(T_ / temp))
    kl_rows = (p_t * (np.log(p_t) - _np_log_softmax(S / temp))).sum(axis=1)
    return float(kl_rows.mean() * temp * temp)


def _loss(alpha: float, temp: float, labels: bool = True):
    return distillation_loss(torch.tensor(S), torch.tensor(T_), torch.tensor(Y) if labels else None,
                             alpha=alpha, temperature=temp)


def test_loss_alpha_one_is_cross_entropy():
    parts = _loss(1.0, 4.0)
    assert math.isclose(float(parts.total), _hand_ce(), rel_tol=1e-6)
    assert math.isclose(float(parts.ce), _hand_ce(), rel_tol=1e-6)


def test_loss_alpha_zero_is_t_squared_kl():
    for temp in (1.0, 4.0):
        parts = _loss(0.0, temp)
        assert math.isclose(float(parts.total), _hand_kd(temp), rel_tol=1e-6)
    assert _hand_kd(4.0) > 0


def test_loss_mixes_and_no_labels_is_pure_kd():
    parts = _loss(0.3, 2.0)
    assert math.isclose(float(parts.total), 0.3 * _hand_ce() + 0.7 * _hand_kd(2.0), rel_tol=1e-6)
    no_labels = _loss(0.9, 2.0, labels=False)  # alpha ignored
    assert no_labels.ce is None
    assert math.isclose(float(no_labels.total), _hand_kd(2.0), rel_tol=1e-6)


def test_loss_is_zero_when_student_matches_teacher():
    t = torch.tensor(T_)
    assert float(distillation_loss(t, t, None, alpha=0.5, temperature=3.0).total) == pytest.approx(0.0, abs=1e-9)


# -- real runs --------------------------------------------------------------
def test_distillation_improves_student(tmp_path, digits, models):
    events: list = []
    ctx = _ctx(tmp_path, digits, models, events=events)
    params = Distill.Params(epochs=4, learning_rate=1e-2)
    before_hash = _sha(models["student"].path)
    acc0 = _accuracy(models["student"], digits["xte"], digits["yte"])
    out = Distill().run(models["student"], params, ctx)
    acc1 = _accuracy(out.model, digits["xte"], digits["yte"])
    teacher_acc = _accuracy(models["teacher"], digits["xte"], digits["yte"])
    # held-out digits (n=497, never seen in training): the student goes from chance to near the teacher
    assert acc0 < 0.3 and acc1 > 0.85 and teacher_acc > 0.93
    m = out.metrics
    assert m["student_val_accuracy"] > m["student_val_accuracy_before"] + 0.5
    assert m["teacher_val_accuracy"] > 0.9 and m["epochs_run"] == 4 and m["device_cuda"] == 0.0
    assert 1 <= m["best_epoch"] <= 4 and m["seconds_per_step"] > 0
    assert out.model.path.endswith("model.safetensors") and Path(out.model.path).parent == ctx.work_dir
    assert _sha(models["student"].path) == before_hash  # input untouched
    assert any("n=1170" in n and "n=130" in n for n in out.notes)
    assert [r["epoch"] for r in out.tables["epochs"]] == [1, 2, 3, 4]
    # events: one loss event per optimizer step, one validation event per epoch
    losses = [p for k, p in events if k == "loss"]
    vals = [p for k, p in events if k == "validation"]
    assert len(losses) == m["steps"] == 4 * math.ceil(1170 / 64)
    assert [p["step"] for p in losses] == list(range(1, len(losses) + 1))
    assert all(p["ce"] is not None and p["kd"] >= 0 and math.isfinite(p["value"]) for p in losses)
    assert [p["epoch"] for p in vals] == [1, 2, 3, 4] and all(p["n"] == 130 for p in vals)
    assert losses[-1]["value"] < losses[0]["value"]


def test_same_seed_gives_same_weights(tmp_path, digits, models):
    from safetensors.numpy import load_file

    params = Distill.Params(epochs=1, max_batches_per_epoch=5, seed=3)
    a = Distill().run(models["student"], params, _ctx(tmp_path / "a", digits, models))
    b = Distill().run(models["student"], params, _ctx(tmp_path / "b", digits, models))
    c = Distill().run(models["student"], params.model_copy(update={"seed": 4}), _ctx(tmp_path / "c", digits, models))
    wa, wb, wc = (load_file(o.model.path) for o in (a, b, c))
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert not all(np.array_equal(wa[k], wc[k]) for k in wa)
    assert a.metrics["steps"] == 5


def test_cancel_within_one_batch_leaves_no_output(tmp_path, digits, models):
    token = CancelToken()
    events: list = []

    def cancel_on_loss(kind: str, payload: dict) -> None:
        if kind == "loss":
            token.cancel()

    ctx = _ctx(tmp_path, digits, models, events=events, cancel=token, on_event=cancel_on_loss)
    with pytest.raises(Cancelled):
        Distill().run(models["student"], Distill.Params(epochs=3), ctx)
    assert [k for k, _ in events].count("loss") == 1
    assert not ctx.work_dir.exists() or not any(ctx.work_dir.iterdir())  # no output, no temp file


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_teacher_matches_torch_teacher(tmp_path, digits, models):
    onnx_path = tmp_path / "teacher.onnx"
    torch.onnx.export(models["teacher_module"], (torch.zeros(2, 64),), str(onnx_path), dynamo=False,
                      input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "batch"}})
    params = Distill.Params(epochs=2, learning_rate=1e-2, teacher=str(onnx_path))
    out = Distill().run(models["student"], params, _ctx(tmp_path, digits, models))
    ref = Distill().run(models["student"], params.model_copy(update={"teacher": "source"}),
                        _ctx(tmp_path / "ref", digits, models))
    assert out.metrics["teacher_val_accuracy"] == ref.metrics["teacher_val_accuracy"] > 0.9
    assert out.metrics["student_val_accuracy"] > out.metrics["student_val_accuracy_before"] + 0.3
    assert any("(onnx," in n for n in out.notes) and any("teacher: teacher.onnx" in n for n in out.notes)


def test_no_labels_is_pure_soft_target_kd(tmp_path, digits, models):
    events: list = []
    ctx = _ctx(tmp_path, digits, models, labels=False, events=events)
    out = Distill().run(models["student"], Distill.Params(epochs=3, learning_rate=1e-2, alpha=0.9), ctx)
    assert "teacher_val_accuracy" not in out.metrics and "student_val_accuracy" not in out.metrics
    assert out.metrics["student_val_agreement"] > out.metrics["student_val_agreement_before"] + 0.3
    assert any("alpha is ignored" in n for n in out.notes)
    assert all(p["ce"] is None for k, p in events if k == "loss")
    # the agreement is real: the student now predicts what the teacher predicts on unseen digits
    assert _accuracy(out.model, digits["xte"], digits["yte"]) > 0.75


def test_early_stopping_keeps_best_weights(tmp_path, digits, models, monkeypatch):
    """A scripted validation curve: best at epoch 2, then flat → stops after `patience` epochs."""
    from safetensors.torch import load_file

    from slimline.plugins.distill import trainer

    scores = iter([0.1, 0.5, 0.8, 0.7, 0.8, 0.6, 0.9, 0.95])
    states: list = []

    def scripted_evaluate(student, data, idx, params, device):
        states.append({k: v.detach().clone() for k, v in student.state_dict().items()})
        return trainer.Evaluation(loss=1.0, accuracy=next(scores), n=len(idx))

    monkeypatch.setattr(trainer, "evaluate", scripted_evaluate)
    out = Distill().run(models["student"], Distill.Params(epochs=8, patience=3),
                        _ctx(tmp_path, digits, models))
    assert out.metrics["epochs_run"] == 5 and out.metrics["best_epoch"] == 2
    assert any("early stopping" in n for n in out.notes)
    saved = load_file(out.model.path)
    assert all(torch.equal(saved[k], states[2][k]) for k in saved)      # weights after epoch 2
    assert not all(torch.equal(saved[k], states[5][k]) for k in saved)  # not the last epoch's


def test_no_training_data_fails_clearly(tmp_path, digits, models):
    ctx = StepContext(work_dir=tmp_path, source_model=models["teacher"])
    with pytest.raises(StepFailed, match="distillation needs training data") as exc:
        Distill().run(models["student"], Distill.Params(), ctx)
    assert "--data" in str(exc.value)
    ctx.data = SimpleNamespace(train=None, eval=None, calibration=None)
    with pytest.raises(StepFailed, match="add --data"):
        Distill().run(models["student"], Distill.Params(), ctx)


def test_user_supplied_student_file(tmp_path, digits, models):
    out = Distill().run(models["teacher"], Distill.Params(epochs=2, learning_rate=1e-2,
                                                          student=models["student"].path),
                        _ctx(tmp_path, digits, models))
    assert out.model.param_count == models["student"].param_count < models["teacher"].param_count
    assert any("user-supplied" in n for n in out.notes)


# -- bad params and pre-flight ---------------------------------------------
@pytest.mark.parametrize("field,value", [
    ("alpha", 1.5), ("temperature", 0.0), ("epochs", 0), ("batch_size", 0), ("learning_rate", -1.0),
    ("optimizer", "rmsprop"), ("device", "tpu"), ("validation_fraction", 0.9), ("teacher", ""),
    ("max_batches_per_epoch", -1), ("bogus", 1),
])
def test_bad_params_refused_naming_the_field(field, value):
    with pytest.raises(ValidationError) as exc:
        Distill.Params(**{field: value})
    assert field in str(exc.value)


def test_defaults_and_schema():
    p = Distill.Params()
    assert (p.epochs, p.batch_size, p.learning_rate, p.temperature, p.alpha, p.validation_fraction,
            p.patience, p.device, p.seed, p.teacher) == (10, 64, 1e-3, 4.0, 0.5, 0.1, 3, "auto", 0, "source")
    schema = Distill.Params.model_json_schema()
    assert all(prop.get("description") for prop in schema["properties"].values())
    assert Distill.Params.model_validate_json(p.model_dump_json()) == p
    assert Distill.info()["category"] == "distill" and Distill.needs_data == ("train",)


def test_check_names_the_field(tmp_path, models):
    plugin = Distill()
    assert plugin.check(models["student"], Distill.Params()) == []
    probs = plugin.check(models["student"], Distill.Params(teacher=str(tmp_path / "missing.onnx")))
    assert [p.field for p in probs] == ["teacher"] and probs[0].fix
    not_archive = tmp_path / "junk.safetensors"
    not_archive.write_bytes(b"junk")
    probs = plugin.check(models["student"], Distill.Params(student=str(not_archive)))
    assert [p.field for p in probs] == ["student"]
    scripted = models["student"].model_copy(update={"format": "torchscript"})
    probs = plugin.check(scripted, Distill.Params())
    assert probs[0].field == "student" and "torchscript" in probs[0].message and probs[0].fix
    onnx_model = models["student"].model_copy(update={"format": "onnx", "family": "onnx"})
    assert plugin.check(onnx_model, Distill.Params())
    weights = models["student"].model_copy(update={"format": "safetensors", "family": "weights"})
    assert plugin.check(weights, Distill.Params())[0].fix


def test_run_refuses_what_check_refuses(tmp_path, digits, models):
    with pytest.raises(StepFailed) as exc:
        Distill().run(models["student"], Distill.Params(teacher=str(tmp_path / "nope.onnx")),
                      _ctx(tmp_path, digits, models))
    assert exc.value.subject == "teacher"


def test_eval_data_only_is_not_trained_on(tmp_path, digits, models):
    """The pipeline scores on the eval split: training on it would inflate accuracy."""
    ev = FakeDataset("digits eval", {"x": digits["xte"]}, digits["yte"])
    ctx = StepContext(work_dir=tmp_path, source_model=models["teacher"],
                      data=SimpleNamespace(train=None, eval=ev, calibration=None))
    with pytest.raises(StepFailed, match="distillation needs training data") as exc:
        Distill().run(models["student"], Distill.Params(), ctx)
    assert "--train-data" in exc.value.hint


def test_runs_as_a_pipeline_step_with_real_datasets(tmp_path, digits, models):
    """End to end through the runner: .npz files → DataBundle → distill step → metric events."""
    from slimline.core.data import DataBundle
    from slimline.core.pipeline import parse_pipeline
    from slimline.core.runner import run_pipeline

    np.savez(tmp_path / "train.npz", x=digits["xtr"], labels=digits["ytr"])
    np.savez(tmp_path / "eval.npz", x=digits["xte"], labels=digits["yte"])
    pipe = parse_pipeline({
        "format": "slimline.pipeline", "schema_version": 1, "name": "kd",
        "steps": [{"id": "kd", "plugin": "builtin.distill", "plugin_version": "1", "enabled": True,
                   "params": {"epochs": 3, "learning_rate": 0.01, "student": models["student"].path}}],
        "evaluation": {"latency": {"batch_sizes": [1], "runs": 3, "warmup": 1}},
    })
    data = DataBundle.from_paths(eval=tmp_path / "eval.npz", train=tmp_path / "train.npz", model=models["teacher"])
    events: list = []
    record = run_pipeline(pipe, models["teacher"], workspace=tmp_path / "ws", emit=events.append, data=data,
                          threads=1, data_paths=(str(tmp_path / "eval.npz"), str(tmp_path / "train.npz")))
    assert record.status == "done"
    step = record.results[-1]
    assert step.step_id == "kd" and step.metrics["student_val_accuracy"] > 0.8
    assert step.model.param_count == models["student"].param_count
    kinds = [(e.kind, e.step_id) for e in events if e.type == "metric"]
    assert ("loss", "kd") in kinds and ("validation", "kd") in kinds


def test_one_hot_labels_are_refused_with_a_hint(tmp_path, digits, models):
    onehot = np.eye(10, dtype=np.int64)[digits["ytr"]]
    ctx = _ctx(tmp_path, digits, models)
    ctx.data.train = FakeDataset("digits one-hot", {"x": digits["xtr"]}, onehot)
    with pytest.raises(StepFailed, match="labels have shape") as exc:
        Distill().run(models["student"], Distill.Params(epochs=1), ctx)
    assert exc.value.subject == "data" and "one-hot" in exc.value.hint


def test_self_distillation_is_flagged(tmp_path, digits, models):
    out = Distill().run(models["teacher"], Distill.Params(epochs=1, max_batches_per_epoch=2),
                        _ctx(tmp_path, digits, models))
    assert any("self-distillation" in w for w in out.warnings)


def test_hugging_face_student_keeps_its_architecture(tmp_path):
    """An HF folder as the student: optional inputs may be missing; the output reloads as the same class."""
    transformers = pytest.importorskip("transformers")
    from slimline.core.models import open_model
    from slimline.core.torchmodel import load_torch_module

    cfg = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, num_labels=3, max_position_embeddings=16)
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(cfg).save_pretrained(tmp_path / "hf")
    handle = open_model(tmp_path / "hf")
    ids = np.random.default_rng(0).integers(0, 40, (96, 8)).astype(np.int64)
    ds = FakeDataset("token ids", {"input_ids": ids}, (ids[:, 0] % 3).astype(np.int64))
    ctx = StepContext(work_dir=tmp_path / "w", data=SimpleNamespace(train=ds, eval=None, calibration=None),
                      source_model=handle, threads=1)
    out = Distill().run(handle, Distill.Params(epochs=1, batch_size=32), ctx)
    assert out.model.format == "slimline_torch" and out.model.meta["arch_kind"] == "hf"
    reloaded = load_torch_module(out.model)
    assert type(reloaded).__name__ == "BertForSequenceClassification"
    assert out.metrics["steps"] == 3 and any("self-distillation" in w for w in out.warnings)
