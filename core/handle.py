"""Models are handles, not live objects: a path plus format plus metadata.

A handle is cheap, JSON-serialisable and crosses process boundaries, so steps
and jobs pass handles around and each step writes a new file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

# File-level format (what the bytes are).
FileFormat = Literal[
    "onnx",            # ONNX protobuf (+ external data files in the same folder)
    "torchscript",     # torch.jit archive
    "torch_export",    # torch.export .pt2 archive (loading unpickles)
    "state_dict",      # torch.load(weights_only=True) checkpoint of tensors
    "safetensors",     # bare safetensors weights
    "hf",              # Hugging Face folder: config.json + safetensors
    "slimline_torch",  # Slimline archive: architecture spec + safetensors, no pickle
    "pickle_module",   # full pickled nn.Module (only when the user trusts it)
]
# Chain family used by the pipeline's format check and plugins' input_formats.
Family = Literal["onnx", "torch", "weights"]


class TensorSpec(BaseModel):
    """One model input or output. Dynamic dims are strings (their names)."""

    name: str
    dtype: str = "float32"
    shape: list[int | str] = Field(default_factory=list)

    def concrete_shape(self, dims: dict[str, int], batch: int | None = None) -> list[int]:
        """Shape with dynamic dims replaced by ``dims`` (batch dim first if given)."""
        out: list[int] = []
        for i, d in enumerate(self.shape):
            if isinstance(d, int) and d > 0:
                out.append(d)
            elif i == 0 and batch is not None:
                out.append(batch)
            elif isinstance(d, str) and d in dims:
                out.append(int(dims[d]))
            else:
                out.append(1)
        if batch is not None and out:
            out[0] = batch
        return out


class Capabilities(BaseModel):
    """What can be done with a model, and why not when it can't."""

    inspect: bool = True
    run: bool = True
    compress: bool = True
    reason: str = ""


class ModelHandle(BaseModel):
    path: str
    format: FileFormat
    family: Family
    files: list[str] = Field(default_factory=list)
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)
    dim_defaults: dict[str, int] = Field(default_factory=dict)
    param_count: int = 0
    bytes_on_disk: int = 0
    producer: str = ""
    opset: int | None = None
    trusted: bool = False
    capabilities: Capabilities = Field(default_factory=Capabilities)
    # facts the user should read before trusting numbers on this model ("dequantized from GGUF ...")
    notes: list[str] = Field(default_factory=list)
    meta: dict = Field(default_factory=dict)

    @model_serializer(mode="wrap")
    def _without_empty_notes(self, handler: SerializerFunctionWrapHandler) -> dict:
        """Records written before notes existed read back and write out byte-identical."""
        data = handler(self)
        if isinstance(data, dict) and not data.get("notes"):
            data.pop("notes", None)
        return data

    @property
    def name(self) -> str:
        return Path(self.path).name

    def with_dims(self, **dims: int) -> "ModelHandle":
        """A copy with edited values for dynamic dims."""
        return self.model_copy(update={"dim_defaults": {**self.dim_defaults, **dims}})

    def content_hash(self) -> str:
        """SHA-256 over all files of the model (used as the step-cache key)."""
        import hashlib

        h = hashlib.sha256()
        for f in sorted(self.files or [self.path]):
            p = Path(f)
            if p.is_file():
                h.update(p.name.encode())
                with p.open("rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
        return h.hexdigest()
