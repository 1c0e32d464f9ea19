"""What an export leaves behind, as data: files with checksums and measured parity.

Records are pydantic models so the CLI can print them as JSON, the bundle's
model card can embed them and the report can show them without re-measuring.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from slimline.core.errors import SlimlineError
from slimline.core.lm.parity import GreedyCheck

ExportFormat = Literal["onnx", "torchscript", "pt2", "safetensors", "onnx-genai", "onnx-genai-fp16", "onnx-genai-int4",
                       "onnx-logits"]
# language models only: onnxruntime-genai folders (KV cache, generate API) and a plain logits ONNX
LM_FORMATS: tuple[str, ...] = ("onnx-genai", "onnx-genai-fp16", "onnx-genai-int4", "onnx-logits")
FORMATS: tuple[str, ...] = ("onnx", "torchscript", "pt2", "safetensors", *LM_FORMATS)
Precision = Literal["fp32", "fp16", "int8", "mixed", "other"]


class ExportError(SlimlineError):
    """An export could not be written (format does not fit the model, file exists, …)."""


class ParityError(ExportError):
    """The written file does not reproduce the source model's outputs within tolerance."""


class Tolerance(BaseModel):
    """Limits for a parity check; the abs limit scales with the output magnitude."""

    max_abs_rel: float   # allowed max |a-b| as a fraction of max(1, max |reference|)
    min_cosine: float    # lowest acceptable mean cosine similarity per row
    min_top1: float      # lowest acceptable top-1 agreement (classification-style outputs)


class Parity(BaseModel):
    """Measured agreement between the exported file and its source model."""

    kind: Literal["outputs", "weights", "lm"] = "outputs"   # lm: logits on token windows + greedy tokens
    runtime: str                    # what loaded the exported file (onnxruntime, torch.jit, …)
    source_runtime: str = ""        # what ran the source model
    precision: str = "fp32"
    n: int                          # rows compared (or tensors for kind="weights")
    input_kind: str = "dataset"     # dataset | random (random = smoke check only)
    dataset: str = ""
    max_abs_error: float
    max_abs_allowed: float = 0.0
    mean_cosine: float | None = None
    min_cosine: float | None = None
    top1_agreement: float | None = None
    tolerance: Tolerance | None = None
    passed: bool = True
    failures: list[str] = Field(default_factory=list)
    greedy: GreedyCheck | None = None     # language models: greedy tokens of the export vs the source's


class FileEntry(BaseModel):
    path: str
    bytes: int
    sha256: str


class ExportRecord(BaseModel):
    """One verified export: where it went, what it is, how faithful it is."""

    format: str
    name: str
    path: str                       # the main file (model.onnx, model.pt, …)
    files: list[FileEntry] = Field(default_factory=list)
    bytes: int = 0                  # all files together
    sha256: str = ""                # of the main file
    parity: Parity | None = None
    source: dict[str, Any] = Field(default_factory=dict)
    external_data: bool = False
    notes: list[str] = Field(default_factory=list)
    created: str = Field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))
    duration_s: float = 0.0


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entry(path: Path, relative_to: Path | None = None) -> FileEntry:
    shown = path.relative_to(relative_to).as_posix() if relative_to else str(path)
    return FileEntry(path=shown, bytes=path.stat().st_size, sha256=sha256_file(path))


def model_sha256(files: list[str] | None, path: str) -> str:
    """Plain SHA-256 of a one-file model (checkable with sha256sum); for several files,
    the SHA-256 of the ``SHA256SUMS``-style listing of their checksums."""
    paths = [Path(f) for f in (files or [path])]
    paths = [p for p in paths if p.is_file()]
    if not paths:
        return ""
    if len(paths) == 1:
        return sha256_file(paths[0])
    listing = "".join(f"{sha256_file(p)}  {p.name}\n" for p in sorted(paths, key=lambda q: q.name))
    return hashlib.sha256(listing.encode()).hexdigest()
