"""Run every corpus model through the engine with each quantize preset and print the per-step tables.

    python -m tests.realmodels.sweep [--only ID] [--preset builtin.quantize_fp16] [--no-inspect]

Models nobody here made are the honest test of the engine: each runnable model (ONNX, TorchScript) goes
through ``run_pipeline`` exactly as ``slimline run`` does (open, load data, run, measure), once per preset;
weights-only files (state_dict, safetensors) must be refused with a clear "cannot run" message; GGUF language
models open as dequantized HF folders and are measured by the LM tests, not here. A case
passes when it finishes or fails with a SlimlineError that has a message and a hint and names no Python
exception type; an unexpected exception (a traceback) is a bug to fix in core/ or plugins/.

Image models get the real photo folder ``$SLIMLINE_REALMODELS/skimage-photos`` when it is cached; other
models (and image models without the photos) get random inputs, and the summary says so.
"""
from __future__ import annotations

import argparse
import io
import re
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .fetch import cache_root, model_path
from .manifest import MODELS, RealModel

PRESETS = ("builtin.quantize_dynamic", "builtin.quantize_static", "builtin.quantize_fp16")
ONNX_EXPORTERS = ("torch.onnx", "tf2onnx", "paddle2onnx", "spox", "onnx.quantize")
RUNNABLE_EXPORTERS = (*ONNX_EXPORTERS, "torchscript")
PHOTOS = "skimage-photos"
# a message naming a Python exception type is a plugin bug leaking through, not a user-facing explanation
EXC_NAME = re.compile(r"\b(AttributeError|KeyError|IndexError|TypeError|ValueError|NameError|RuntimeError|"
                      r"AssertionError|ZeroDivisionError|UnboundLocalError|NotImplementedError|"
                      r"RuntimeException|Fail|InvalidArgument|InvalidGraph)\b:?")
# what a user passes with --dim: silero takes 512-sample chunks at 16 kHz (its sr scalar defaults to 16000)
# PP-OCR's recognizer reads text lines 48 px high (its height dim is named "?"), 320 px wide as rapidocr pads them
DIMS: dict[str, dict[str, int]] = {"silero-vad-onnx": {"input_dim1": 512, "state_dim1": 1},
                                   "rapidocr-rec-v4": {"?": 48, "p2o.DynamicDimension.1": 320}}
_SETTINGS: dict[str, Any] = {"latency": {"batch_sizes": [1], "runs": 5, "warmup": 1}, "max_rows": 16}


@dataclass
class Case:
    """One model × preset: how it ended and the figures for the summary table."""

    model: str
    preset: str
    status: str = "?"          # done | refused | cannot run | CRASH
    message: str = ""
    hint: str = ""
    data: str = ""
    size_ratio: float | None = None
    metric: str = ""
    value: float | None = None
    flags: list[str] = field(default_factory=list)
    table: str = ""
    details: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Finished, or refused with a clear message (message + hint, no exception type names)."""
        if self.status == "done":
            return True
        if self.status in ("refused", "cannot run"):
            return bool(self.message) and not EXC_NAME.search(self.message) and "Traceback" not in self.message
        return False

    def row(self) -> list[str]:
        ratio = f"{self.size_ratio:.2f}x" if self.size_ratio else "-"
        val = f"{self.metric}={self.value:.4g}" if self.value is not None else (self.metric or "-")
        why = ", ".join(self.flags) if self.status == "done" else f"{self.message} → {self.hint}".strip(" →")
        return [self.model, self.preset.replace("builtin.", ""), self.status, ratio, val, why[:160], self.data]


def is_image_model(m: RealModel) -> bool:
    return any(w in m.data.lower() for w in ("image", "crops"))


def pipeline_doc(m: RealModel, preset: str) -> dict[str, Any]:
    """The pipeline for one case: TorchScript is converted to ONNX first (quantizers work on ONNX)."""
    steps: list[dict[str, Any]] = []
    if m.exporter == "torchscript":
        steps.append({"id": "c", "plugin": "builtin.convert_onnx", "params": {}})
    if preset != "(open)":  # "(open)": a runnable model no preset applies to (HF folder) is opened and measured
        steps.append({"id": "q", "plugin": preset, "params": {}})
    return {"format": "slimline.pipeline", "schema_version": 1, "name": f"{m.id} {preset}", "steps": steps,
            "evaluation": dict(_SETTINGS)}


def data_path(m: RealModel, handle: Any, preset: str, tmp: Path) -> tuple[str | None, str]:
    """(dataset path or None, how to describe it): real photos for image models, else random inputs."""
    photos = cache_root() / PHOTOS
    if is_image_model(m) and photos.is_dir():
        return str(photos), f"real photos ({PHOTOS})"
    why = "random inputs" + (f" ({PHOTOS} not cached)" if is_image_model(m) else "")
    if preset != "builtin.quantize_static":
        return None, why
    import numpy as np

    from slimline.core.data import random_dataset

    ds = random_dataset(handle, 32, seed=0)
    out = tmp / f"{m.id}-random.npz"
    np.savez(out, **ds.inputs)
    return str(out), why + " saved as .npz for calibration"


def run_case(m: RealModel, preset: str, workspace: Path) -> Case:
    """Run one model × preset in-process, the way the job worker does; never raises."""
    from slimline.core.errors import SlimlineError
    from slimline.core.models import open_model
    from slimline.core.pipeline import parse_pipeline
    from slimline.core.render import print_run
    from slimline.core.runner import load_data, run_pipeline

    case = Case(m.id, preset)
    t0 = time.perf_counter()
    record = None
    try:
        handle = open_model(str(model_path(m)))
        if m.id in DIMS:
            handle = handle.with_dims(**DIMS[m.id])
        if not handle.capabilities.run:
            case.status, case.message = "cannot run", handle.capabilities.reason or ""
            case.hint = "weights only: give the model's code (or an ONNX/TorchScript export) to run it"
            return case
        pipe = parse_pipeline(pipeline_doc(m, preset))
        path, case.data = data_path(m, handle, preset, workspace)
        data = load_data(pipe, handle, path, None)
        events: list[Any] = []
        record = run_pipeline(pipe, handle, workspace=workspace, emit=events.append, data=data,
                              data_paths=(path, None), use_cache=False)
        case.status = "done"
    except SlimlineError as exc:
        case.status, case.message, case.hint = "refused", exc.message, exc.hint or ""
        case.details = getattr(exc, "details", "") or ""
        if not case.hint:
            case.status = "refused (no hint)"
    except Exception as exc:  # noqa: BLE001 - this is what the sweep hunts
        case.status, case.message, case.details = "CRASH", f"{type(exc).__name__}: {exc}", traceback.format_exc()
    finally:
        case.seconds = time.perf_counter() - t0
    if record is None:
        record = _last_record(workspace)
    if record is not None:
        buf = io.StringIO()
        print_run(record, out=buf)
        case.table = buf.getvalue()
        _figures(case, record)
    return case


def _last_record(workspace: Path) -> Any:
    from slimline.core.history import load_run

    runs = sorted((workspace / "runs").glob("*/run.json"), key=lambda p: p.stat().st_mtime) \
        if (workspace / "runs").is_dir() else []
    try:
        return load_run(runs[-1].parent) if runs else None
    except Exception:  # noqa: BLE001 - a partial record is only for the table
        return None


def _figures(case: Case, record: Any) -> None:
    res = record.results
    if len(res) < 2:
        return
    first, last = res[0], res[-1]
    try:
        case.size_ratio = first.size.bytes_on_disk / max(last.size.bytes_on_disk, 1)
    except AttributeError:
        pass
    if last.fidelity is not None:
        case.metric, case.value = last.fidelity.metric or "", last.fidelity.value
    case.flags = list(last.flags)


def inspect_summary(m: RealModel) -> tuple[bool, str]:
    """(ok, one line) from `slimline inspect` as text: params, tensors, op types — or the clear refusal."""
    import contextlib

    from slimline.core.cli import run as cli_run

    buf, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
            rc = cli_run(["inspect", str(model_path(m)), "--limit", "5"])
    except SystemExit as exc:
        rc = int(exc.code or 0)
    except Exception as exc:  # noqa: BLE001
        return False, f"CRASH {type(exc).__name__}: {exc}"
    text, errs = buf.getvalue(), err.getvalue()
    if "Traceback" in errs + text:
        return False, f"rc={rc}; traceback: " + errs.strip().splitlines()[-1][:300]
    if rc == 2:  # a refused file (not a model): the message and next action go to stderr, nothing to stdout
        said = [ln.strip() for ln in errs.splitlines() if ln.strip()]
        clear = bool(said) and said[0].startswith("error:") and any(ln.startswith("→") for ln in said) \
            and not EXC_NAME.search(errs)
        return clear, "rc=2 (refused); " + " ".join(said)[:400]
    keep = [ln.strip() for ln in text.splitlines()
            if re.search(r"param|tensor|op types|weights|inputs|outputs", ln, re.I)][:6]
    return rc == 0, f"rc={rc}; " + " | ".join(keep)[:400]


def cases_for(m: RealModel) -> list[str]:
    """Presets for runnable ONNX/TorchScript files, "(open)" for the rest; none for GGUF language models, which
    open as runnable 135M-parameter LMs that the LM evaluation measures on text (tests/lm), not on random inputs."""
    if m.exporter == "gguf":
        return []
    return list(PRESETS) if m.exporter in RUNNABLE_EXPORTERS else ["(open)"]


def main(argv: list[str] | None = None) -> int:
    from slimline.core.render import table

    ap = argparse.ArgumentParser(prog="python -m tests.realmodels.sweep", description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append", default=[], help="corpus id (repeatable)")
    ap.add_argument("--preset", action="append", default=[], help="preset plugin id (repeatable)")
    ap.add_argument("--no-inspect", action="store_true")
    ap.add_argument("--no-tables", action="store_true", help="summary only")
    args = ap.parse_args(argv)
    models = [m for m in MODELS if not args.only or m.id in args.only]
    if args.only and not models:
        print(f"no corpus model named {args.only}", file=sys.stderr)
        return 2
    cases: list[Case] = []
    inspected: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="slimline-sweep-") as tmp:
        for m in models:
            if not model_path(m).exists():
                print(f"-- {m.id}: not cached (make realmodels)")
                continue
            if not args.no_inspect:
                ok, line = inspect_summary(m)
                inspected.append([m.id, "ok" if ok else "FAIL", line])
            for preset in cases_for(m):
                if preset != "(open)" and args.preset and preset not in args.preset:
                    continue
                ws = Path(tmp) / f"{m.id}-{preset}"
                ws.mkdir()
                case = run_case(m, preset, ws)
                cases.append(case)
                print(f"\n== {m.id} × {preset}: {case.status} ({case.seconds:.1f} s; data: {case.data or '-'})")
                if case.table and not args.no_tables:
                    print(case.table)
                if case.status != "done":
                    print(f"   {case.message}\n   → {case.hint}")
                if case.status == "CRASH":
                    print(case.details)
    if inspected:
        print("\n## inspect\n")
        print(table(["model", "inspect", "summary"], inspected))
    print("\n## sweep\n")
    print(table(["model", "preset", "status", "size ratio", "fidelity", "flags / reason", "data"],
                [c.row() for c in cases]))
    bad = [c for c in cases if not c.ok] + [r for r in inspected if r[1] != "ok"]
    print(f"\n{len(cases)} cases, {len(bad)} not clear")
    return 1 if bad else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
