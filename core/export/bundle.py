"""Deployment bundle: model file(s), model card, predict.py, requirements, checksums.

The bundle folder is built in a hidden sibling folder and renamed into place only
when complete (model verified, predict.py smoke-tested, SHA256SUMS written), so a
cancel or failure never leaves a half bundle. ``--zip`` adds ``<folder>.zip``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from slimline.core.export.records import ExportError, ExportRecord, FileEntry, file_entry, sha256_file
from slimline.core.fsutil import atomic_path
from slimline.core.handle import ModelHandle

SUMS = "SHA256SUMS"
Progress = Callable[[float, str], None]


class BundleRecord(BaseModel):
    bundle_dir: str
    files: list[FileEntry] = Field(default_factory=list)
    bytes: int = 0
    zip_path: str | None = None
    zip_bytes: int | None = None
    zip_sha256: str | None = None
    triton_dir: str | None = None
    predict_check: dict[str, Any] = Field(default_factory=dict)
    model_export: ExportRecord
    created: str = Field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))
    duration_s: float = 0.0


def requirements() -> list[str]:
    """Pinned minimal requirements of predict.py: the versions this export was verified with."""
    from importlib.metadata import version

    return [f"numpy=={version('numpy')}", f"onnxruntime=={version('onnxruntime')}"]


def write_sums(folder: Path) -> Path:
    """SHA256SUMS in ``sha256sum -c`` format over every file of the folder (except itself)."""
    lines = [f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}"
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != SUMS]
    path = folder / SUMS
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


LM_USE = ["python chat.py \"Once upon a time\"   (greedy continuation; tokens/s on stderr)",
          "python chat.py --chat   (interactive)"]
LM_README_TAIL = """
## In this bundle too

- `MODEL_CARD.md` / `model_card.json`: where the model came from, the pipeline and what each step measured
- `SHA256SUMS`: every file's checksum (`sha256sum -c SHA256SUMS`)
"""


def lm_bundle_format(handle: ModelHandle, precision: str | None) -> str:
    """The LM export format a bundle of ``handle`` uses ("" when it is not a language model)."""
    from slimline.core.export.lm import lm_kind

    kind = lm_kind(handle)
    if kind == "genai":
        if precision not in (None, "fp32"):
            raise ExportError(f"this variant is already an onnxruntime-genai folder; --precision {precision} "
                              "needs the torch model", subject=handle.path,
                              hint="leave out --precision (the folder is copied as it is), or bundle the torch step")
        return "onnx-genai"
    if kind == "torch":
        return {None: "onnx-genai", "fp32": "onnx-genai", "fp16": "onnx-genai-fp16",
                "int4": "onnx-genai-int4"}[precision]
    if precision is not None:
        raise ExportError("--precision applies to language-model bundles only", subject=handle.path,
                          hint="leave out --precision")
    return ""


def _as_variant(target: Any) -> Any:
    if isinstance(target, ModelHandle):
        from slimline.core.export.formats import default_name
        from slimline.core.export.variants import Variant

        return Variant(handle=target, name=default_name(target))
    return target


def _check_free(out: Path, zip_path: Path | None, force: bool) -> None:
    if force:
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError("the bundle folder already exists and is not empty", subject=str(out),
                          hint="pass --force to replace it, or choose another --out")
    if zip_path is not None and zip_path.exists():
        raise ExportError("the zip file already exists", subject=str(zip_path),
                          hint="pass --force to replace it, or choose another --out")


def _smoke_predict(folder: Path, model_file: str, dataset: Any, reference: Any) -> dict[str, Any]:
    """Run the bundle's predict.py on a few rows with this Python; its top-1 must match ours."""
    import numpy as np

    # Inside the packaged app sys.executable is `slimline`, which runs scripts like python
    # (installers/slimline_main.py), so the check runs there too.
    rows = dataset.take(16)
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "rows.npz"
        np.savez(npz, **rows.inputs)
        proc = subprocess.run([sys.executable, str(folder / "predict.py"), str(npz), "--json",
                               "--model", str(folder / model_file)],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ""})
    if proc.returncode != 0:
        raise ExportError(f"the bundle's predict.py failed: {proc.stderr.strip().splitlines()[-1:]}",
                          subject="predict.py", hint="report this; the bundle was not written")
    got = json.loads(proc.stdout)["predictions"]
    ref = reference[: len(rows)]
    want = ref.argmax(axis=-1).tolist() if ref.ndim >= 2 and ref.shape[-1] > 1 else None
    if want is not None and got != want:
        raise ExportError("predict.py printed different predictions than the verified model",
                          subject="predict.py", hint="report this; the bundle was not written")
    return {"ran": True, "rows": len(rows), "matches_app": want is not None}


def export_bundle(target: Any, out_dir: str | Path, *, force: bool = False, data: Any = None,
                  cancel: Any = None, name: str | None = None, zip_bundle: bool = False, triton: bool = False,
                  max_batch_size: int = 64, progress: Progress | None = None,
                  lm_precision: str | None = None, lm_context_length: int = 0) -> BundleRecord:
    """Build a deployment bundle for a Variant (or a bare ModelHandle) in ``out_dir``.

    A causal LM's bundle is an onnxruntime-genai folder (built at ``lm_precision``, default
    fp32, or the variant's own genai folder copied) with chat.py instead of predict.py.
    """
    from slimline.core.export import parity as par
    from slimline.core.export.card import build_card, card_markdown
    from slimline.core.export.formats import safe_name, write_verified
    from slimline.core.export.predict_script import render
    from slimline.core.metrics import library_versions
    from slimline.core.models import open_model

    t0 = time.perf_counter()
    variant = _as_variant(target)
    handle: ModelHandle = variant.handle
    name = safe_name(name or variant.name)
    out = Path(out_dir).expanduser().absolute()
    zip_path = out.with_name(out.name + ".zip") if zip_bundle else None
    _check_free(out, zip_path, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))

    def step(fraction: float, message: str) -> None:
        if cancel is not None:
            cancel.raise_if_cancelled()
        if progress is not None:
            progress(fraction, message)

    try:
        def inner(fraction: float, message: str) -> None:
            step(0.7 * fraction, message)

        lm_fmt = lm_bundle_format(handle, lm_precision)
        if lm_fmt:  # a language model: the bundle is an onnxruntime-genai folder with chat.py
            from slimline.core.export.lm import write_lm

            rec = write_lm(handle, lm_fmt, stage, "", name=name, data=data, cancel=cancel, progress=inner,
                           context_length=lm_context_length)
        else:
            rec = write_verified(handle, "onnx", stage, name, data=data, cancel=cancel, progress=inner)
        rec.source.update({k: v for k, v in {
            "run_id": variant.run.run_id if variant.run else None,
            "step_id": variant.step.step_id if variant.step else None,
            "step_title": variant.step.title if variant.step else None}.items() if v})
        step(0.72, "writing the model card")
        exported = open_model(stage / rec.path)
        dataset = None if lm_fmt else par.parity_data(handle, data)
        pipeline_file = pipeline_sha = None
        if variant.run is not None and variant.run.pipeline:
            pipeline_file = "pipeline.json"
            (stage / pipeline_file).write_text(json.dumps(variant.run.pipeline, indent=2) + "\n", encoding="utf-8")
            pipeline_sha = sha256_file(stage / pipeline_file)
        if lm_fmt:
            from slimline.core.export.lm import requirements as lm_requirements

            reqs, use = lm_requirements(), LM_USE
        else:
            reqs, use = requirements(), None
        card = build_card(name=name, exported=exported, export_record=rec.model_dump(mode="json"), variant=variant,
                          dataset=dataset, pipeline_file=pipeline_file, pipeline_sha=pipeline_sha,
                          versions=library_versions(), requirements=reqs, use=use)
        kv = exported.meta.get("kv_cache")
        if kv:  # the table shows the full-sequence view; say what else the graph takes
            card["preprocessing"]["notes"].append(
                f"KV-cache decoder: the graph also takes {len(kv['past_inputs'])} past_key_values.* tensors "
                f"({kv['layers']} layers, head size {kv['head_size']}) and returns present.*; onnxruntime-genai "
                "(chat.py) feeds them — for one full pass give them sequence length 0")
        (stage / "model_card.json").write_text(json.dumps(card, indent=1, default=str) + "\n", encoding="utf-8")
        (stage / "MODEL_CARD.md").write_text(card_markdown(card), encoding="utf-8")
        if lm_fmt:
            readme = stage / "README.md"
            readme.write_text(readme.read_text(encoding="utf-8") + LM_README_TAIL, encoding="utf-8")
        else:
            (stage / "predict.py").write_text(render(rec.path), encoding="utf-8")
            os.chmod(stage / "predict.py", 0o755)
        (stage / "requirements.txt").write_text("\n".join(reqs) + "\n", encoding="utf-8")
        triton_dir = None
        if triton:
            step(0.78, "writing the Triton model repository")
            from slimline.core.export.triton import write_triton_repo

            triton_dir = write_triton_repo(stage / rec.path, stage / "triton", name,
                                           max_batch_size=max_batch_size).relative_to(stage)
        if lm_fmt or dataset is None:  # write_lm already ran chat.py in a child process and compared its tokens
            check = {"ran": True, "script": "chat.py", "notes": [n for n in rec.notes if n.startswith("chat.py")]}
        else:
            step(0.82, "smoke-testing predict.py")
            ref, _ = par.source_outputs(exported, dataset.take(16), cancel)
            check = _smoke_predict(stage, rec.path, dataset, ref[0])
        step(0.9, "writing SHA256SUMS")
        write_sums(stage)
        for p in stage.rglob("*"):
            if p.is_file():
                with open(p, "rb+") as fh:
                    os.fsync(fh.fileno())
        step(0.93, "moving the bundle into place")
        _swap_in(stage, out, force)
        files = [file_entry(p, out) for p in sorted(out.rglob("*")) if p.is_file()]
        rec.files = [e.model_copy(update={"path": str(out / e.path)}) for e in rec.files]
        rec.path = str(out / rec.path)
        record = BundleRecord(bundle_dir=str(out), files=files, bytes=sum(f.bytes for f in files),
                              triton_dir=str(out / triton_dir) if triton_dir else None, predict_check=check,
                              model_export=rec)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if zip_path is not None:
        if progress is not None:
            progress(0.96, "writing the zip")
        with atomic_path(zip_path) as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for p in sorted(out.rglob("*")):
                    if p.is_file():
                        zf.write(p, f"{out.name}/{p.relative_to(out).as_posix()}")
        record.zip_path, record.zip_bytes = str(zip_path), zip_path.stat().st_size
        record.zip_sha256 = sha256_file(zip_path)
    record.duration_s = time.perf_counter() - t0
    if progress is not None:
        progress(1.0, "done")
    return record


def _swap_in(stage: Path, out: Path, force: bool) -> None:
    """Rename the finished staging folder to ``out`` (an old bundle is removed only after)."""
    old = None
    if out.exists():
        if any(out.iterdir()) and not force:  # appeared while we were building
            raise ExportError("the bundle folder appeared while exporting", subject=str(out),
                              hint="pass --force to replace it")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
