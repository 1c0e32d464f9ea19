"""Task-aware fidelity: each kind of output is judged by a metric that means something for it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from slimline.core import fidelity as fm
from slimline.core.data import load_dataset
from slimline.core.errors import PipelineError
from slimline.core.evaluate import Evaluator, flags_for
from slimline.core.handle import ModelHandle, TensorSpec
from slimline.core.pipeline import Budgets, Evaluation, parse_pipeline
from slimline.core.tasks import budget_check, fidelity_for, infer_task, resolve_task

sys.path.insert(0, str(Path(__file__).parent))
import modelfiles as mf  # noqa: E402

RNG = np.random.default_rng(0)


def _h(outputs: list[tuple[str, list]] | None = None, inputs=None, meta=None) -> ModelHandle:
    return ModelHandle(path="/m.onnx", format="onnx", family="onnx",
                       inputs=[TensorSpec(name=n, shape=s, dtype=d) for n, s, d in (inputs or [("x", ["batch", 8],
                                                                                               "float32")])],
                       outputs=[TensorSpec(name=n, shape=s) for n, s in (outputs or [])], meta=meta or {})


# --------------------------------------------------------------------------- metrics per task


def test_embedder_whose_argmax_flips_but_cosine_is_high_passes():
    ref = RNG.normal(size=(64, 6, 32)).astype(np.float32)
    ref[..., 0] = ref[..., 1] = 5.0  # a tie among "hidden units": argmax is noise
    got = ref + RNG.normal(scale=0.02, size=ref.shape).astype(np.float32)
    got[..., 0] -= 0.05
    got[..., 1] += 0.05
    assert fm.top1_agreement(ref.mean(1), got.mean(1)) < 0.5  # what the old check measured
    mask = np.ones((64, 6), np.int64)
    fid = fidelity_for("embedding", ref, got, SimpleNamespace(inputs={"attention_mask": mask}, name="s.txt"))
    assert fid.metric == "pooled cosine" and fid.value > 0.999
    assert budget_check("embedding", fid, Budgets())[0]
    broken = fidelity_for("embedding", ref, RNG.normal(size=ref.shape), None)
    ok, why = budget_check("embedding", broken, Budgets())
    assert not ok and "pooled cosine" in why


def test_pooling_ignores_padding_positions():
    hidden = np.zeros((2, 4, 3))
    hidden[:, :2] = 1.0
    hidden[:, 2:] = 100.0  # padding
    mask = np.array([[1, 1, 0, 0], [1, 1, 0, 0]])
    np.testing.assert_allclose(fm.masked_mean_pool(hidden, mask), 1.0)
    other = hidden.copy()
    other[:, 2:] = -100.0  # different padding, same sentence
    fid = fidelity_for("embedding", hidden, other, SimpleNamespace(inputs={"attention_mask": mask}, name=""))
    assert fid.value == pytest.approx(1.0)


def test_nearest_neighbour_agreement():
    x = RNG.normal(size=(30, 16))
    assert fm.nn_agreement(x, x + 1e-6) == 1.0
    assert fm.nn_agreement(x, RNG.normal(size=(30, 16))) < 0.5


def test_near_zero_probability_map_with_tiny_error_passes_and_a_broken_map_fails():
    ref = np.zeros((8, 1, 32, 32), np.float32)  # mostly empty probability maps
    ref[:2, :, 4:10, 4:20] = 0.97                    # text in two photos only
    got = ref + RNG.uniform(-4e-5, 4e-5, size=ref.shape).astype(np.float32)
    got = np.clip(got, 0, 1)
    assert fm.row_cosines(ref, got).min() < 0.01  # cosine of near-zero maps says nothing
    fid = fidelity_for("dense_map", ref, got, None)
    assert fid.metric == "relative L2" and fid.value < 1e-3 and fid.extra["map agreement"] == 1.0
    assert fid.extra["PSNR dB"] > 60
    assert budget_check("dense_map", fid, Budgets())[0]
    broken = np.clip(ref + RNG.uniform(0, 0.6, size=ref.shape), 0, 1).astype(np.float32)
    bad = fidelity_for("dense_map", ref, broken, None)
    ok, why = budget_check("dense_map", bad, Budgets())
    assert not ok and "relative L2" in why and bad.extra["map agreement"] < 0.9


def test_classification_unchanged_top1_agreement_and_cosine_budget():
    ref = RNG.normal(size=(50, 5))
    fid = fidelity_for("classification", ref, ref + 1e-4, None)
    assert fid.metric == "top-1 agreement" and fid.value == 1.0 and fid.extra["KL"] < 1e-6
    assert budget_check("classification", fid, Budgets())[0]
    bad = fidelity_for("classification", ref, -ref, None)
    assert not budget_check("classification", bad, Budgets())[0]


def test_token_logits_agreement_kl_and_perplexity():
    n, s, v = 4, 6, 11
    ids = RNG.integers(0, v, size=(n, s))
    logits = RNG.normal(size=(n, s, v))
    # A model that predicts the data perfectly has perplexity ~1; uniform logits give v.
    perfect = np.full((n, s, v), -30.0)
    perfect[np.arange(n)[:, None], np.arange(s - 1)[None], ids[:, 1:]] = 30.0
    assert fm.perplexity(perfect, ids) == pytest.approx(1.0, abs=1e-6)
    assert fm.perplexity(np.zeros((n, s, v)), ids) == pytest.approx(v)
    mask = np.ones((n, s), np.int64)
    mask[:, -2:] = 0
    ds = SimpleNamespace(inputs={"input_ids": ids, "attention_mask": mask}, name="t.txt")
    same = fidelity_for("token_logits", logits, logits + 1e-6, ds)
    assert same.metric == "next-token agreement" and same.value == 1.0
    assert same.extra["perplexity increase"] == pytest.approx(0.0, abs=1e-6)
    assert budget_check("token_logits", same, Budgets())[0]
    other = fidelity_for("token_logits", logits, RNG.normal(size=logits.shape), ds)
    ok, why = budget_check("token_logits", other, Budgets())
    assert not ok and "next-token agreement" in why and other.extra["KL"] > 0.1


def test_generic_is_relative_l2_and_says_so():
    ref = RNG.normal(size=(10, 3))
    fid = fidelity_for("generic", ref, ref * 1.01, None)
    assert fid.task == "generic" and fid.metric == "relative L2" and fid.value == pytest.approx(0.01)
    ok, why = budget_check("generic", fidelity_for("generic", ref, ref * 2, None), Budgets())
    assert not ok and why.startswith("generic outputs")


# --------------------------------------------------------------------------- inference of the task


def test_infer_from_shapes_and_names():
    assert infer_task(_h([("logits", ["batch", 10])]), RNG.normal(size=(4, 10))).task == "classification"
    assert infer_task(_h([("y", ["batch", 1, 16, 16])]), RNG.normal(size=(4, 1, 16, 16))).task == "dense_map"
    tok = [("input_ids", ["batch", "seq"], "int64"), ("attention_mask", ["batch", "seq"], "int64")]
    g = infer_task(_h([("last_hidden_state", ["batch", "seq", 32])], tok), RNG.normal(size=(2, 5, 32)))
    assert g.task == "embedding" and "last_hidden_state" in g.reason
    assert infer_task(_h([("sentence_embedding", ["batch", 32])], tok), RNG.normal(size=(2, 32))).task == "embedding"
    assert infer_task(_h([("logits", ["batch", "seq", 50])], tok), RNG.normal(size=(2, 5, 50))).task == \
        "token_logits"
    assert infer_task(_h([("y", ["batch"])]), RNG.normal(size=(4,))).task == "generic"
    causal = infer_task(_h(meta={"architectures": ["LlamaForCausalLM"]}), None)
    assert causal.task == "token_logits" and "LlamaForCausalLM" in causal.reason


def test_override_wins_and_is_said():
    g = resolve_task("generic", _h([("logits", ["batch", 10])]), RNG.normal(size=(4, 10)))
    assert g.task == "generic" and "evaluation.task" in g.reason
    pipe = parse_pipeline({"steps": [], "evaluation": {"task": "dense_map", "max_rows": 10}})
    assert pipe.evaluation.task == "dense_map" and pipe.evaluation.max_rows == 10
    with pytest.raises(PipelineError, match="task"):
        parse_pipeline({"steps": [], "evaluation": {"task": "regression"}})


def _evaluate(handle, data, **settings):
    ev = Evaluator(Evaluation.model_validate({"latency": {"runs": 1, "warmup": 0}, **settings}), eval_data=data)
    return ev, ev.evaluate(handle)


def test_built_models_get_their_task(tmp_path, make_tiny_mlp):
    from slimline.core.models import open_model

    path, data = make_tiny_mlp()
    h = open_model(path)
    _, m = _evaluate(h, load_dataset(data, h))
    assert m.fidelity.task == "classification" and m.accuracy is not None

    bert = open_model(mf.hf_bert_encoder(tmp_path / "bert"))
    txt = mf.sentences(tmp_path / "s.txt", 12)
    ev, m = _evaluate(bert, load_dataset(txt, bert))
    assert m.fidelity.task == "embedding" and m.fidelity.metric == "pooled cosine" and m.accuracy is None
    assert "BertModel" in m.fidelity.task_reason

    lm = open_model(mf.hf_causal_lm(tmp_path / "lm"))
    ds = load_dataset(txt, lm)
    _, m = _evaluate(lm, ds)
    assert m.fidelity.task == "token_logits" and "perplexity" in m.fidelity.extra

    _, m = _evaluate(bert, load_dataset(txt, bert), task="generic", max_rows=5)
    assert m.fidelity.task == "generic" and m.fidelity.n == 5


def test_conv_map_model_is_a_dense_map(tmp_path):
    import torch

    from slimline.core.models import open_model
    from slimline.core.torchmodel import save_torch_module

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.Sigmoid())
    path = tmp_path / "det.safetensors"
    save_torch_module(net, path, inputs=[TensorSpec(name="x", shape=["batch", 3, 8, 8])],
                      outputs=[TensorSpec(name="y", shape=["batch", 2, 8, 8])])
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        np.save(folder / f"{i}.npy", RNG.random((8, 8, 3)).astype(np.float32))
    h = open_model(path)
    ds = load_dataset(folder, h)
    assert ds.labels is None
    _, m = _evaluate(h, ds)
    assert m.fidelity.task == "dense_map" and m.accuracy is None and m.fidelity.metric == "relative L2"


def test_flags_use_the_tasks_check():
    from slimline.core.results import Measurement

    def meas(value):
        return Measurement.model_validate({
            "size": {"bytes_on_disk": 1000, "param_count": 10},
            "fidelity": {"n": 8, "mean_cosine": 0.1, "min_cosine": 0.0, "max_abs_error": 4e-5,
                         "top1_agreement": 0.3, "input_kind": "dataset", "dataset": "photos", "task": "dense_map",
                         "task_reason": "N×C×H×W map", "metric": "relative L2", "value": value,
                         "higher_is_better": False, "extra": {"map agreement": 1.0}}})

    flags, _ = flags_for(meas(0.001), meas(0.0), meas(0.0), Evaluation())
    assert "over_budget" not in flags  # the cosine of 0.1 is not what judges a map
    flags, reasons = flags_for(meas(0.5), meas(0.0), meas(0.0), Evaluation())
    assert flags == ["over_budget"] and "relative L2" in reasons[0]


# --------------------------------------------------------------------------- labels only from labelled data


def _imgs(folder: Path, n: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        np.save(folder / f"{i}.npy", RNG.random((4, 4)).astype(np.float32))


@pytest.mark.parametrize("layout, labelled", [
    (["cat", "dog"], True),
    (["unlabeled"], False),
    (["cat"], False),
    (["cat", "unknown"], False),
    (["images", "test"], False),
    ([], False),           # flat
])
def test_image_folder_labels_rules(tmp_path, layout, labelled):
    root = tmp_path / "data"
    for sub in layout:
        _imgs(root / sub)
    if not layout:
        _imgs(root, 3)
    ds = load_dataset(root)
    assert (ds.labels is not None) is labelled
    assert ds.meta["labels"]


def test_loose_images_beside_subfolders_are_unlabelled(tmp_path):
    root = tmp_path / "data"
    _imgs(root / "a")
    _imgs(root / "b")
    _imgs(root, 1)
    assert load_dataset(root).labels is None


def test_flat_folder_cli_run(tmp_path):
    import torch

    from slimline.core.torchmodel import save_torch_module

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 3, padding=1), torch.nn.Sigmoid())
    model = tmp_path / "det.safetensors"
    save_torch_module(net, model, inputs=[TensorSpec(name="x", shape=["batch", 3, 8, 8])],
                      outputs=[TensorSpec(name="y", shape=["batch", 1, 8, 8])])
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(5):
        np.save(flat / f"{i}.npy", RNG.random((8, 8, 3)).astype(np.float32))
    pipe = tmp_path / "p.json"
    pipe.write_text(json.dumps({"format": "slimline.pipeline", "steps": [],
                                "evaluation": {"latency": {"runs": 2, "warmup": 0}}}))
    env = {"PYTHONPATH": ":".join(sys.path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    res = subprocess.run([sys.executable, "-m", "slimline.core.cli", "run", str(pipe), str(model), "--data",
                          str(flat), "--workspace", str(tmp_path / "ws")], capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert "task: dense_map" in res.stdout and "fidelity" in res.stdout
    # A run that fails on its data before it starts says why instead of a traceback.
    bad = tmp_path / "bad"
    bad.mkdir()
    res = subprocess.run([sys.executable, "-m", "slimline.core.cli", "run", str(pipe), str(model), "--data",
                          str(bad), "--workspace", str(tmp_path / "ws")], capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr and "no images" in res.stderr


def test_timing_of_a_big_model_is_capped_near_the_evaluation_time():
    from slimline.core.evaluate import timing_runs

    assert timing_runs(50, 10, 0.001, 1.0) == (50, 10)       # small model: settings as they are
    runs, warmup = timing_runs(50, 10, 0.7, 10.0)             # 0.7 s per run, evaluation took 10 s
    assert runs == 14 and warmup == 2 and (runs + warmup) * 0.7 < 12
    assert timing_runs(50, 10, 30.0, 1.0) == (5, 1)           # never fewer than 5 timed runs


def test_evaluation_progress_reports_rows_per_second(make_tiny_mlp):
    from slimline.core.models import open_model

    path, data = make_tiny_mlp(rows=200)
    h = open_model(path)
    seen: list[str] = []
    ev = Evaluator(Evaluation.model_validate({"latency": {"runs": 1, "warmup": 0}}), eval_data=load_dataset(data, h),
                   progress=lambda f, m: seen.append(m))
    ev.evaluate(h)
    assert any("rows/s" in m and "ETA" in m and "200/200" in m for m in seen)


def test_quantize_guardrail_judges_an_embedder_by_pooled_cosine(tmp_path):
    """An encoder's hidden states are not class scores: no top-1 agreement is computed or required."""
    from slimline.core.data import DataBundle
    from slimline.core.models import open_model
    from slimline.core.plugin import StepContext
    from slimline.plugins.convert.plugin import ConvertToOnnx
    from slimline.plugins.quantize.dynamic import QuantizeDynamic

    bert = open_model(mf.hf_bert_encoder(tmp_path / "bert"))
    ds = load_dataset(mf.sentences(tmp_path / "s.txt", 16), bert)
    bundle = DataBundle(eval=ds, calibration=ds)
    out = ConvertToOnnx().run(bert, ConvertToOnnx.Params(), StepContext(work_dir=tmp_path / "c", data=bundle))
    ctx = StepContext(work_dir=tmp_path / "q", data=bundle, source_model=bert)
    res = QuantizeDynamic().run(out.model, QuantizeDynamic.Params(min_top1_agreement=1.0), ctx)
    assert "top1_agreement" not in res.metrics
    assert res.metrics["embedding: pooled cosine"] > 0.99
    assert any(n.startswith("task: embedding") for n in res.notes)


# --------------------------------------------------------------------------- dense maps: positives at a threshold


def _yolo_like(n: int = 3, classes: int = 6, anchors: int = 400) -> np.ndarray:
    """[N, 4+C, A] like ultralytics YOLOv8: pixel boxes (large) + sigmoid class scores (mostly ~0)."""
    rng = np.random.default_rng(1)
    out = np.zeros((n, 4 + classes, anchors), np.float32)
    out[:, :4] = rng.uniform(5, 320, size=(n, 4, anchors))
    out[:, 4:] = rng.uniform(0, 0.02, size=(n, classes, anchors))
    out[0, 4 + 2, 10:14] = [0.81, 0.77, 0.6, 0.45]    # a few detections, as in a real photo
    out[2, 4 + 5, 200:203] = [0.9, 0.52, 0.33]
    return out


def test_detection_head_is_recognised_as_a_dense_map_with_sub_kind_detection():
    out = _yolo_like()
    g = infer_task(_h([("output0", [1, 10, 400])], [("images", [1, 3, 320, 320], "float32")]), out)
    assert g.task == "dense_map" and "detection head" in g.reason and "6 class-score rows" in g.reason
    assert fm.detection_axis(out) == 1 and fm.detection_axis(out.transpose(0, 2, 1)) == 2
    assert fm.detection_axis(np.zeros((2, 10, 30), np.float32)) is None       # too few anchors: a map
    out_logits = out.copy()
    out_logits[:, 4:] -= 3.0                                                   # scores not in [0, 1]
    assert fm.detection_axis(out_logits) is None
    cfg = infer_task(_h(meta={"architectures": ["YolosForObjectDetection"]}), out)
    assert cfg.task == "dense_map" and "detection head (config" in cfg.reason


def test_detector_whose_boxes_hold_but_scores_collapse_is_refused_on_positives_iou():
    ref = _yolo_like()
    got = ref.copy()
    got[:, 4:] = np.minimum(got[:, 4:], 0.2)             # every detection lost, boxes untouched
    assert fm.rel_l2_error(ref, got) < 0.05              # what the whole-output relative L2 said
    fid = fidelity_for("dense_map", ref, got, SimpleNamespace(name="photos", inputs={}))
    assert fid.metric == "score relative L2" and fid.extra["box relative L2"] == 0.0
    assert fid.extra["positives IoU"] == 0.0 and fid.extra["positives in original"] == 7
    assert fid.extra["positives"] == 0 and fid.extra["threshold"] == 0.25
    ok, why = budget_check("dense_map", fid, Budgets())
    assert not ok
    assert why.startswith("dense map (detection head): ")
    assert "positives IoU at score > 0.25 0.0000 < budget 0.5" in why
    assert "7 anchor × class cells above 0.25 in the original, 0 in this model" in why
    # a stricter threshold is the Budgets field, a looser IoU budget lets it through on IoU
    assert "positives IoU" not in budget_check("dense_map", fid, Budgets(dense_map_min_positives_iou=0.0,
                                                                         dense_map_max_rel_l2=100))[1]


def test_detector_that_keeps_its_scores_passes():
    ref = _yolo_like()
    got = ref + np.random.default_rng(2).normal(0, 5e-4, size=ref.shape).astype(np.float32)
    got[:, :4] += 0.5                                      # half a pixel on every box
    fid = fidelity_for("dense_map", ref, got, None)
    assert fid.extra["positives IoU"] == 1.0 and fid.value < 0.05
    assert 0 < fid.extra["box relative L2"] < 0.01
    assert budget_check("dense_map", fid, Budgets()) == (True, "")
    assert "positives in original 7, positives 7, positives IoU 1.0000" in fid.summary()


def test_detector_with_int8_score_noise_but_its_detections_passes_on_the_detection_budget():
    """Scores near 0 make the score relative L2 large for harmless INT8 noise (nudenet: 0.069 with
    every detection kept): the detection budget (0.10) is looser than the map budget (0.05)."""
    ref = _yolo_like()
    got = ref + np.random.default_rng(3).normal(0, 2e-3, size=ref.shape).astype(np.float32)
    fid = fidelity_for("dense_map", ref, got, None)
    assert 0.05 < fid.value < 0.10 and fid.extra["positives IoU"] == 1.0
    assert budget_check("dense_map", fid, Budgets()) == (True, "")
    ok, why = budget_check("dense_map", fid, Budgets(detection_max_score_rel_l2=0.05))
    assert not ok and "score relative L2" in why and "budget 0.05" in why


def test_probability_map_with_its_positives_shifted_is_refused():
    ref = np.zeros((4, 1, 40, 40), np.float32)
    ref[:, :, 5:15, 5:25] = 0.9                          # a text region in every photo
    got = np.roll(ref, 12, axis=2)                      # the same region, 12 rows lower
    fid = fidelity_for("dense_map", ref, got, None)
    assert fid.metric == "relative L2" and fid.extra["positives IoU"] == 0.0
    ok, why = budget_check("dense_map", fid, Budgets(dense_map_max_rel_l2=100))  # only IoU can catch it
    assert not ok and "positives IoU at score > 0.25 0.0000 < budget 0.5" in why
    assert "800 cells above 0.25 in the original, 800 in this model" in why
    half = np.roll(ref, 5, axis=2)                     # half the region kept: IoU 1/3
    fid = fidelity_for("dense_map", ref, half, None, threshold=0.5)
    assert abs(fid.extra["positives IoU"] - 1 / 3) < 1e-9 and fid.extra["threshold"] == 0.5
    assert not budget_check("dense_map", fid, Budgets(dense_map_max_rel_l2=100))[0]
    assert budget_check("dense_map", fid, Budgets(dense_map_max_rel_l2=100, dense_map_min_positives_iou=0.3))[0]


def test_near_empty_map_with_tiny_noise_passes_and_says_it_has_no_positives():
    ref = np.full((6, 1, 32, 32), 1e-4, np.float32)
    ref[0, 0, 3, 3] = 0.2                                   # nothing above the threshold anywhere
    got = np.clip(ref + RNG.uniform(-5e-5, 5e-5, size=ref.shape), 0, 1).astype(np.float32)
    fid = fidelity_for("dense_map", ref, got, None)
    assert "positives IoU" not in fid.extra and fid.extra["positives in original"] == 0
    assert budget_check("dense_map", fid, Budgets()) == (True, "")
    assert "no positives in the reference at t=0.25: judged by relative L2 only" in fid.summary()
    broken = np.clip(ref + 0.2, 0, 1).astype(np.float32)    # still no positive, but far off
    ok, why = budget_check("dense_map", fidelity_for("dense_map", ref, broken, None), Budgets())
    assert not ok and "relative L2" in why and "no positives in the reference at t=0.25" in why
    # jitter right at the threshold (|Δ| within 1 % of full scale) is not a lost positive
    edge = ref.copy()
    edge[1, 0, :4, :4] = 0.2505
    jitter = edge.copy()
    jitter[1, 0, :4, :4] = 0.2495
    fid = fidelity_for("dense_map", edge, jitter, None)
    assert fid.extra["positives IoU"] == 1.0 and budget_check("dense_map", fid, Budgets())[0]


def test_flags_judge_a_recorded_detection_by_positives_iou():
    from slimline.core.results import Measurement

    ref = _yolo_like()
    got = ref.copy()
    got[:, 4:] = np.minimum(got[:, 4:], 0.2)
    tf = fidelity_for("dense_map", ref, got, SimpleNamespace(name="photos", inputs={}))

    def meas(t):
        return Measurement.model_validate({
            "size": {"bytes_on_disk": 1000, "param_count": 10},
            "fidelity": {"n": t.n, "mean_cosine": 1.0, "min_cosine": 1.0, "max_abs_error": 0.6,
                         "top1_agreement": 1.0, "input_kind": "dataset", "dataset": "photos", "task": "dense_map",
                         "task_reason": "detection head", "metric": t.metric, "value": t.value,
                         "higher_is_better": False, "extra": t.extra}})

    same = fidelity_for("dense_map", ref, ref, None)
    assert flags_for(meas(same), meas(same), meas(same), Evaluation())[0] == []
    flags, reasons = flags_for(meas(tf), meas(same), meas(same), Evaluation())
    assert flags == ["over_budget"] and "positives IoU at score > 0.25 0.0000 < budget 0.5" in reasons[0]
