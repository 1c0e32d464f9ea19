"""The export dialog's child process: resolve the variant, export it, verify it, report back.

Qt-free on purpose (it runs in a spawned interpreter). A process rather than a
thread because exporting torch → ONNX runs seconds of Python that would hold
the GIL and freeze the window, and because cancelling must be able to stop C++
work: cooperative first (the engine checks the token between stages and leaves
nothing behind), then the parent terminates the process.
"""
from __future__ import annotations

import multiprocessing as mp
import time
import traceback
from pathlib import Path
from typing import Any

CANCEL_GRACE_S = 3.0


def export_target(spec: dict[str, Any]) -> tuple[Any, Any]:
    """(engine variant, data path): from the run folder when it still exists, else the bare model."""
    from slimline.core.export.variants import resolve_variant

    run_dir = spec.get("run_dir")
    if run_dir and (Path(run_dir) / "run.json").is_file():
        variant = resolve_variant(run_dir, step=spec["step_id"], trust=spec.get("trust", False))
        return variant, spec.get("data") or variant.data_path
    from slimline.core.export.variants import Variant
    from slimline.core.handle import ModelHandle

    handle = ModelHandle.model_validate(spec["model"])
    from slimline.core.export.formats import default_name

    return Variant(handle=handle, name=default_name(handle)), spec.get("data")


def write_run_report(spec: dict[str, Any], progress: Any = None) -> dict[str, Any]:
    """The run's HTML report (``slimline report``), listing the run's exports."""
    import json

    from slimline.core.export.report import load_export_records, write_report

    run_dir = Path(spec["run_dir"])
    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    out = write_report(record, spec["out"], exports=load_export_records(run_dir), progress=progress)
    return {"path": str(out), "bytes": out.stat().st_size}


def run_export(spec: dict[str, Any], progress: Any = None, cancel: Any = None) -> dict[str, Any]:
    """Do the export described by ``spec``; returns the record as a dict (raises on failure)."""
    if spec.get("kind") == "report":
        return write_run_report(spec, progress)
    variant, data = export_target(spec)
    name = spec.get("name") or variant.name
    fmt = spec["format"]
    if fmt == "bundle":
        from slimline.core.export.bundle import export_bundle

        out = Path(spec["out_dir"]) / f"{name}-bundle"
        rec = export_bundle(variant, out, force=spec.get("force", False), data=data, cancel=cancel, name=name,
                            zip_bundle=spec.get("zip", False), triton=spec.get("triton", False),
                            progress=progress)
    else:
        from slimline.core.export.formats import export_model

        info = {}
        if variant.run is not None and variant.step is not None:
            info = {"run_id": variant.run.get("run_id"), "step_id": variant.step.get("step_id"),
                    "step_title": variant.step.get("title")}
        rec = export_model(variant.handle, fmt, spec["out_dir"], force=spec.get("force", False), data=data,
                           cancel=cancel, name=name, progress=progress, source_info=info)
    record = rec.model_dump(mode="json")
    if variant.run_dir is not None:  # the run's report lists its exports (as `slimline export` does)
        from slimline.core.export.report import append_export_record

        try:
            append_export_record(variant.run_dir, record)
        except OSError:
            pass
    return record


def _child_main(spec: dict[str, Any], events: Any, cancel_event: Any) -> None:
    from slimline.core.errors import Cancelled
    from slimline.core.plugin import CancelToken

    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last[0] > 0.05 or fraction >= 1.0:
            last[0] = now
            events.put({"type": "progress", "fraction": float(fraction), "message": str(message)})

    try:
        record = run_export(spec, progress, CancelToken(cancel_event))
        events.put({"type": "done", "record": record})
    except Cancelled:
        events.put({"type": "cancelled"})
    except BaseException as exc:  # every failure reaches the dialog as a message, never a crash
        from slimline.core.export.records import ParityError

        events.put({"type": "failed", "message": getattr(exc, "message", f"{type(exc).__name__}: {exc}"),
                    "hint": getattr(exc, "hint", "") or "", "subject": getattr(exc, "subject", "") or "",
                    "parity_failed": isinstance(exc, ParityError), "details": traceback.format_exc()})
    finally:
        events.close()
        events.join_thread()


class ExportProcess:
    """Handle on one export child; ``poll()`` never blocks (call it from a timer)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        ctx = mp.get_context("spawn")
        self.events = ctx.Queue()
        self.cancel_event = ctx.Event()
        self.process = ctx.Process(target=_child_main, args=(spec, self.events, self.cancel_event),
                                   name="slimline-export", daemon=True)
        self.cancel_at: float | None = None
        self.final: dict[str, Any] | None = None
        self.process.start()

    def cancel(self) -> None:
        if self.final is None and self.cancel_at is None:
            self.cancel_event.set()
            self.cancel_at = time.monotonic()

    def poll(self) -> list[dict[str, Any]]:
        import queue

        out: list[dict[str, Any]] = []
        if self.final is not None:
            return out
        while True:
            try:
                ev = self.events.get_nowait()
            except (queue.Empty, EOFError, OSError):
                break
            out.append(ev)
            if ev["type"] in ("done", "failed", "cancelled"):
                self.final = ev
                return out
        if self.cancel_at is not None and time.monotonic() - self.cancel_at > CANCEL_GRACE_S:
            self.process.terminate()  # the engine stages into a hidden folder; nothing half-written is kept
            self.final = {"type": "cancelled", "forced": True}
            out.append(self.final)
        elif not self.process.is_alive() and self.events.empty():
            self.final = {"type": "failed", "message": f"the export process ended unexpectedly "
                          f"(exit code {self.process.exitcode})", "hint": "try again; if it repeats, export "
                          "from the command line (slimline export) to see the full error", "subject": ""}
            out.append(self.final)
        return out
