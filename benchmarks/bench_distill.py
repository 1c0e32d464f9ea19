"""Distillation on the demo: a ≤25%-parameter student keeps ≥98% of the teacher's accuracy.

Teacher: the bundled digits CNN. Student: the same CNN structurally pruned with
Torch-Pruning (conv channels 50%, hidden Linear 256→120, so ≤25% of the parameters),
then distilled from the teacher by the real plugin on digits_train.npz. Accuracy
is measured on digits_eval.npz (n=449, never trained on). Time per step is
compared with a bare torch loop doing the same step on the same model and batch.

Run: ``python -m benchmarks.bench_distill [--epochs N]``. CPU threads = 2.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_PARAMS = 0.25
TARGET_KEEP = 0.98
TARGET_OVERHEAD = 1.5
BARE_STEPS = 10


def _accuracy(module: Any, x: Any, y: Any) -> float:
    import torch

    module.eval()
    with torch.no_grad():
        pred = torch.cat([module(x[i:i + 128]).argmax(1) for i in range(0, len(x), 128)])
    return float((pred.cpu() == y.cpu()).float().mean())


def _params(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def make_student(teacher_path: Path, out_path: Path, inputs: Any, outputs: Any) -> Any:
    """The demo CNN pruned by Torch-Pruning: channels 32/64/128/128 → 16/32/64/64, hidden 256 → 120."""
    import torch
    import torch_pruning as tp

    from slimline.core.torchmodel import load_torch_module, save_torch_module

    model = load_torch_module(teacher_path)
    hidden = [m for m in model if isinstance(m, torch.nn.Linear)][0]
    pruner = tp.pruner.MetaPruner(
        model, torch.zeros(2, 1, 32, 32), importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.5, pruning_ratio_dict={hidden: 0.53}, ignored_layers=[model[-1]])
    pruner.step()
    return save_torch_module(model.eval(), out_path, inputs=inputs, outputs=outputs)


def bare_step_seconds(student_path: Path, x: Any, y: Any, teacher_logits: Any, device: str,
                      *, lr: float, alpha: float, temperature: float) -> float:
    """Mean seconds of a plain torch KD step (no events, no indexing) on one fixed batch."""
    import torch
    import torch.nn.functional as F

    from slimline.core.torchmodel import load_torch_module

    model = load_torch_module(student_path).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y, t = x.to(device), y.to(device), teacher_logits.to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step() -> None:
        s = model(x)
        kd = F.kl_div(F.log_softmax(s / temperature, 1), F.log_softmax(t / temperature, 1),
                      reduction="batchmean", log_target=True) * temperature ** 2
        loss = alpha * F.cross_entropy(s, y) + (1 - alpha) * kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(BARE_STEPS):
        step()
    sync()
    return (time.perf_counter() - t0) / BARE_STEPS


def run_distill(student: Any, teacher: Any, train: Any, work: Path, device: str, epochs: int,
                log: bool = True) -> Any:
    from slimline.core.data import DataBundle
    from slimline.core.plugin import StepContext
    from slimline.plugins.distill import Distill

    def on_event(kind: str, payload: dict) -> None:
        if log and kind == "validation":
            print(f"  [{device}] epoch {payload['epoch']}: validation top-1 {payload['accuracy']:.4f} "
                  f"(n={payload['n']}), loss {payload['loss']:.4f}", flush=True)

    ctx = StepContext(work_dir=work, event_cb=on_event, data=DataBundle(train=train),
                      source_model=teacher, threads=2)
    params = Distill.Params(epochs=epochs, device=device)
    return Distill().run(student, params, ctx), params


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    from slimline.core.data import load_dataset
    from slimline.core.demo import demo_paths
    from slimline.core.torchmodel import handle_for_archive, load_torch_module
    from slimline.plugins.distill.teacher import Teacher

    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_distill")
    ap.add_argument("--epochs", type=int, default=6, help="maximum distillation epochs (early stopping may end sooner)")
    args = ap.parse_args(argv or [])
    torch.set_num_threads(2)
    t_start = time.perf_counter()
    paths = demo_paths()
    teacher_h = handle_for_archive(paths["torch"])
    train = load_dataset(paths["train"], teacher_h)
    evald = load_dataset(paths["eval"], teacher_h)
    xe, ye = torch.from_numpy(evald.inputs["input"]), torch.from_numpy(evald.labels)
    teacher = load_torch_module(teacher_h)
    t_acc, t_params = _accuracy(teacher, xe, ye), _params(teacher)

    rows: list[list[Any]] = []
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_distill_") as tmp:
        tmp_p = Path(tmp)
        student_h = make_student(paths["torch"], tmp_p / "student.safetensors", teacher_h.inputs, teacher_h.outputs)
        student0 = load_torch_module(student_h)
        s_params, s_acc0 = _params(student0), _accuracy(student0, xe, ye)
        print(f"teacher {t_params:,} params, student {s_params:,} params ({s_params / t_params:.1%}); "
              f"train {train.name} n={len(train)}, eval {evald.name} n={len(evald)}", flush=True)

        # one fixed batch + its teacher logits for the bare loop
        xb, yb = torch.from_numpy(train.inputs["input"][:64]), torch.from_numpy(train.labels[:64])
        tb = torch.from_numpy(Teacher(teacher_h, "cpu", 2).logits({"input": train.inputs["input"][:64]},
                                                                  batch_size=64, cancel=_NoCancel()))
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            result, params = run_distill(student_h, teacher_h, train, tmp_p / device, device, args.epochs)
            distilled = load_torch_module(result.model)
            s_acc1 = _accuracy(distilled, xe, ye)
            bare = statistics.median(
                bare_step_seconds(student_h.path, xb, yb, tb, device, lr=params.learning_rate,
                                  alpha=params.alpha, temperature=params.temperature) for _ in range(2))
            m = result.metrics
            ratio = m["seconds_per_step"] / bare
            rows.append([device, f"{t_params:,}", f"{t_acc:.4f}", f"{s_params:,} ({s_params / t_params:.1%})",
                         f"{s_acc0:.4f}", f"{s_acc1:.4f}", f"{s_acc1 / t_acc:.1%}",
                         f"{int(m['epochs_run'])} (best {int(m['best_epoch'])})",
                         f"{m['seconds_per_step'] * 1000:.1f}", f"{bare * 1000:.1f}", f"{ratio:.2f}x"])
            out[device] = {"teacher_params": t_params, "teacher_acc": t_acc, "student_params": s_params,
                           "student_acc_before": s_acc0, "student_acc_after": s_acc1,
                           "kept": s_acc1 / t_acc, "epochs_run": m["epochs_run"], "best_epoch": m["best_epoch"],
                           "seconds_per_step": m["seconds_per_step"], "bare_seconds_per_step": bare,
                           "overhead": ratio, "val_metrics": m, "notes": result.notes}

    headers = ["device", "teacher params", "teacher acc", "student params", "student acc before",
               "student acc after", "kept", "epochs", "ms/step (plugin)", "ms/step (bare torch)", "overhead"]
    title = (f"Distillation on digits (eval n={len(evald)}, batch 64, threads 2; "
             f"accuracy = top-1 on {evald.name})")
    try:
        from benchmarks.common import print_table, save_results

        print_table(title, headers, rows)
    except ImportError:  # pragma: no cover - run outside the repo
        print(title)
        for r in rows:
            print(r)
        save_results = None  # type: ignore[assignment]
    first = out["cpu"]
    checks = [
        ("student params ≤ 25% of teacher", first["student_params"] / t_params <= TARGET_PARAMS),
        ("student keeps ≥ 98% of teacher accuracy", first["kept"] >= TARGET_KEEP),
        *((f"{d}: overhead over bare loop ≤ {TARGET_OVERHEAD}x", out[d]["overhead"] <= TARGET_OVERHEAD) for d in out),
    ]
    for name, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    print(f"  total {time.perf_counter() - t_start:.0f} s; per-step time includes data indexing, the loss "
          f"event and progress per batch; bare loop = same model, same batch, same loss, no events")
    if save_results is not None:
        save_results("bench_distill", {"rows": out, "checks": dict(checks)})
    return out


class _NoCancel:
    def raise_if_cancelled(self) -> None:
        return None


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
