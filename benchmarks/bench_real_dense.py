"""A dense-map model and a detector nobody here made: Slimline's static INT8 on real photos beside onnxruntime's.

Models (real-model corpus): ``rapidocr-det-v4`` — PP-OCRv4 text detector (paddle2onnx DBNet; output a sigmoid text
probability map 1×1×H×W; all weights are Constant nodes), at 480×480, ImageNet mean/std; ``nudenet-320n`` —
YOLOv8n (torch.onnx; output 1×22×2100 = 4 box coordinates + 18 class scores in [0, 1] per anchor), at 320×320, [0, 1].
Data: the corpus's real photos (``skimage-photos``: 18 photographs and scans from the scikit-image wheel), read and
resized with Slimline's own image-folder loader (``core.data.load_dataset(..., size, mean, std)``), split by
position: even → calibration (9 images), odd → evaluation (9 images). Both quantizers calibrate on the same 9 and are
scored on the other 9. The split is written as two .npz files because ``slimline run`` has no image options
(size/mean/std) on the command line yet.

Variants (same run, same fp32 file):
  * ORT static (defaults) — ``onnxruntime.quantization.quantize_static(fp32, out, reader)`` with its defaults
                            (QDQ, per-tensor, MinMax, QInt8/QInt8);
  * Slimline static INT8  — ``slimline run`` (CLI subprocess) with one ``builtin.quantize_static`` step, defaults,
                            ``--data eval.npz --train-data calib.npz``; a refusal is printed (metric, value, budget)
                            and the bench goes on.
Figures, computed here with numpy on the evaluation images, vs the fp32 model's outputs:
  * relative L2 = ‖q − f‖ / ‖f‖ per image over the whole output (mean and worst);
  * PSNR (dB) of the map (DBNet: the probability map; YOLO: the class-score rows), peak 1.0, over all images;
  * map agreement at 0.3: IoU of {f > 0.3} and {q > 0.3} (pooled over images), how many map cells exceed 0.3
    (pixels; YOLO: anchor×class scores — fp32's count is the fp32 row), and the share of equal cells;
  * Slimline's own dense-map check (``core.tasks.fidelity_for`` + ``budget_check``, default Budgets) applied to
    every variant: its headline metric (YOLO, sub-kind detection: relative L2 of the class-score rows), positives
    IoU at the Budgets threshold (0.25; original's count → this model's) and the verdict with its reason;
  * size on disk vs fp32; latency batch 1, onnxruntime CPU, interleaved run by run, p50/p90 and CV.

Run: ``python -m benchmarks.bench_real_dense`` (≈ 3–6 min on 2 busy cores; needs ``make realmodels``).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_real_embedding import (
    THREADS,
    attempts,
    corpus,
    interleaved_latency,
    onnx_bytes,
    run_slimline,
    session,
    step_model,
)

THRESHOLD = 0.3
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MODELS = {
    "rapidocr-det-v4": {"size": (480, 480), "mean": IMAGENET[0], "std": IMAGENET[1],
                        "dims": ["p2o.DynamicDimension.0=1", "p2o.DynamicDimension.1=480",
                                 "p2o.DynamicDimension.2=480"],
                        "what": "PP-OCRv4 text detector (DBNet, paddle2onnx), probability map"},
    "nudenet-320n": {"size": (320, 320), "mean": None, "std": None, "dims": ["height=320", "width=320"],
                     "what": "YOLOv8n detector (torch.onnx), 18 class scores per anchor"},
}
PIPELINE = {"format": "slimline.pipeline", "schema_version": 1, "name": "static INT8 (default preset)",
            "steps": [{"id": "s1", "plugin": "builtin.quantize_static", "plugin_version": "1", "enabled": True,
                       "params": {}}],
            "evaluation": {"latency": {"batch_sizes": [1], "runs": 5, "warmup": 1, "threads": THREADS}}}


def images_for(model_path: Path, photos_root: Path, cfg: dict[str, Any]) -> tuple[str, np.ndarray]:
    """(input name, N×3×H×W float32) through Slimline's image-folder loader (one class folder: 'photos')."""
    from slimline.core.data import load_dataset
    from slimline.core.models import open_model

    ds = load_dataset(photos_root, open_model(model_path), size=cfg["size"], grayscale=False,
                      mean=cfg["mean"], std=cfg["std"], layout="NCHW")
    (name, x), = ds.inputs.items()
    return name, x


def outputs(path: Path, name: str, x: np.ndarray) -> np.ndarray:
    sess = session(path, threads=2)
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))]).astype(np.float64)


def score_map(model_id: str, out: np.ndarray) -> np.ndarray:
    """The part of the output that is a map of probabilities/scores in [0, 1]."""
    return out[:, 4:, :] if model_id == "nudenet-320n" else out


def dense_fidelity(model_id: str, ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    n = len(ref)
    diff = (out - ref).reshape(n, -1)
    rel = np.linalg.norm(diff, axis=1) / np.maximum(np.linalg.norm(ref.reshape(n, -1), axis=1), 1e-12)
    mr, mo = score_map(model_id, ref), score_map(model_id, out)
    mse = float(((mo - mr) ** 2).mean())
    br, bo = mr > THRESHOLD, mo > THRESHOLD
    union = int((br | bo).sum())
    return {"rel_l2_mean": float(rel.mean()), "rel_l2_worst": float(rel.max()),
            "psnr_db": float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf"),
            "iou_at_0.3": float((br & bo).sum() / union) if union else 1.0,
            "agree_at_0.3": float((br == bo).mean()), "positives_fp32": int(br.sum()), "positives": int(bo.sum())}


def slimline_check(ref: np.ndarray, out: np.ndarray, n: int) -> dict[str, Any]:
    """What Slimline's dense-map verdict says of this output (the same check the quantize guardrail uses)."""
    from types import SimpleNamespace

    from slimline.core.pipeline import Budgets
    from slimline.core.tasks import budget_check, fidelity_for

    fid = fidelity_for("dense_map", ref, out, SimpleNamespace(name="eval split", inputs={}))
    ok, why = budget_check("dense_map", fid, Budgets())
    return {"check_metric": fid.metric, "check_value": fid.value, "check_ok": ok, "check_reason": why,
            "check_threshold": fid.extra.get("threshold"), "check_iou": fid.extra.get("positives IoU"),
            "check_pos_orig": int(fid.extra.get("positives in original", 0)),
            "check_pos": int(fid.extra.get("positives", 0)), "check_n": n}


def ort_static(fp32: Path, out: Path, name: str, calib: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter([{name: calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.rows, None)

    quantize_static(str(fp32), str(out), Reader())


def bench_model(model_id: str, fp32: Path, photos_root: Path, tmp: Path) -> tuple[dict[str, Any], list[list[Any]]]:
    cfg = MODELS[model_id]
    name, x = images_for(fp32, photos_root, cfg)
    calib, ev = x[0::2], x[1::2]
    work = tmp / model_id
    work.mkdir()
    np.savez(work / "calib.npz", **{name: calib})
    np.savez(work / "eval.npz", **{name: ev})
    variants: dict[str, Path] = {"fp32": fp32}
    res: dict[str, Any] = {"n_eval": len(ev), "n_calibration": len(calib), "input": [name, list(x.shape[1:])]}
    t0 = time.perf_counter()
    try:
        ort_static(fp32, work / "ort_static.onnx", name, calib)
        variants["ORT static (defaults)"] = work / "ort_static.onnx"
        res["ort_error"] = ""
    except Exception as exc:  # a peer failing is a figure too
        res["ort_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    res["ort_seconds"] = time.perf_counter() - t0
    dims = [a for d in cfg["dims"] for a in ("--dim", d)]
    record, err, t_slim = run_slimline(PIPELINE, fp32, work / "slimline",
                                       ["--data", str(work / "eval.npz"), "--train-data", str(work / "calib.npz"),
                                        *dims])
    res["slimline"] = {"seconds": t_slim, "error": err, "attempts": attempts(record, "s1")}
    slim = step_model(record, "s1")
    if slim is not None:
        variants["Slimline static INT8 (default)"] = slim
    ref = outputs(fp32, name, ev)
    lat = interleaved_latency(variants, {name: ev[:1]})
    base = onnx_bytes(fp32)
    rows: list[list[Any]] = []
    res["variants"] = {}
    for k, path in variants.items():
        out = ref if k == "fp32" else outputs(path, name, ev)
        fid = {**dense_fidelity(model_id, ref, out), **slimline_check(ref, out, len(ev))}
        size = onnx_bytes(path)
        r = {"bytes": size, "size_ratio": size / base, **fid, **lat[k],
             "p50_ratio": lat[k]["p50_ms"] / lat["fp32"]["p50_ms"]}
        res["variants"][k] = r
        rows.append([k, f"{size / 1e6:.2f}", f"{r['size_ratio']:.3f}×",
                     f"{r['rel_l2_mean']:.4f}/{r['rel_l2_worst']:.4f}",
                     f"{r['psnr_db']:.1f}", f"{r['iou_at_0.3']:.4f}", f"{r['positives']:,}", f"{r['agree_at_0.3']:.4f}",
                     f"{r['p50_ms']:.2f}/{r['p90_ms']:.2f}", f"{r['p50_ratio']:.2f}×", f"{r['cv'] * 100:.1f}%",
                     f"{r['check_metric']} {r['check_value']:.4f}",
                     ("—" if r["check_iou"] is None else f"{r['check_iou']:.4f}")
                     + f" ({r['check_pos_orig']}→{r['check_pos']})",
                     "pass" if r["check_ok"] else "REFUSE"])
    if res["ort_error"]:
        rows.append(["ORT static (defaults)", "FAILED", *["—"] * 12])
    if slim is None:
        rows.append(["Slimline static INT8 (default)", "REFUSED" if "budget" in err else "FAILED", *["—"] * 12])
    return res, rows


def main() -> None:
    import logging

    from benchmarks.common import print_table, save_results

    logging.getLogger().setLevel(logging.ERROR)
    have = corpus("skimage-photos")
    if have is None:
        return
    photos_root = have["skimage-photos"].parent
    print(f"real photos: {have['skimage-photos']} (calibration: even positions, evaluation: odd); onnxruntime CPU, "
          f"batch 1, {THREADS} intra-op thread(s), interleaved run by run; map threshold {THRESHOLD}")
    results: dict[str, Any] = {"threads": THREADS, "threshold": THRESHOLD, "models": {}}
    checks: dict[str, bool] = {}
    headers = ["variant", "MB", "size", "rel L2 mean/worst", "PSNR dB", "IoU@0.3", ">0.3 count", "agree@0.3",
               "p50/p90 ms",
               "p50 vs fp32", "CV", "Slimline metric", "pos. IoU@0.25", "Slimline check"]
    with tempfile.TemporaryDirectory(prefix="bench_real_dense_") as d:
        for model_id, cfg in MODELS.items():
            paths = corpus(model_id)
            if paths is None:
                continue
            t0 = time.perf_counter()
            try:
                res, rows = bench_model(model_id, paths[model_id], photos_root, Path(d))
            except Exception as exc:  # one model failing must not hide the other's figures
                import traceback

                traceback.print_exc()
                print(f"{model_id}: the bench itself failed ({type(exc).__name__}: {exc}); going on")
                checks[f"{model_id}: bench ran"] = False
                continue
            results["models"][model_id] = res
            print_table(f"{model_id}: {cfg['what']}; static INT8 on {res['n_eval']} held-out real photos "
                        f"({res['input'][0]} {res['input'][1]}), calibrated on {res['n_calibration']}", headers, rows)
            if res["ort_error"]:
                print(f"  ORT static (defaults): {res['ort_error']}")
            for k, v in res["variants"].items():
                if not v["check_ok"]:
                    print(f"  Slimline's check of {k}: {v['check_reason']} (on the eval split, n={v['check_n']})")
            if "Slimline static INT8 (default)" not in res["variants"]:
                print(f"  Slimline static INT8 (default): {res['slimline']['error']}")
            print(f"  wall time: ORT {res['ort_seconds']:.1f} s, Slimline `run` {res['slimline']['seconds']:.1f} s "
                  f"({res['slimline']['attempts']} attempt(s)); {time.perf_counter() - t0:.0f} s for the model")
            s = res["variants"].get("Slimline static INT8 (default)")
            err = res["slimline"]["error"]
            if s is None:
                checks[f"{model_id}: Slimline passed a model or refused with metric, value and budget "
                       f"({err[:200]})"] = ("budget" in err and any(c.isdigit() for c in err))
            else:
                checks[f"{model_id}: Slimline passed a model (size {s['size_ratio']:.3f}×, rel L2 "
                       f"{s['rel_l2_mean']:.4f}, IoU@0.3 {s['iou_at_0.3']:.4f}, p50 {s['p50_ratio']:.2f}×)"] = True
                checks[f"{model_id}: the passed model is smaller than fp32 ({s['size_ratio']:.3f}×)"] = (
                    s["size_ratio"] < 0.5)
                fp = res["variants"]["fp32"]["positives_fp32"]
                checks[f"{model_id}: the passed model keeps the map above {THRESHOLD} "
                       f"(IoU {s['iou_at_0.3']:.3f} ≥ 0.5; {s['positives']} cells vs fp32's {fp})"] = (
                    s["iou_at_0.3"] >= 0.5)
    print("\nchecks:")
    for k, v in checks.items():
        print(f"  [{'PASS' if v else 'FAIL'}] {k}")
    results["checks"] = checks
    print(f"results: {save_results('bench_real_dense', results)}")


if __name__ == "__main__":
    main()
