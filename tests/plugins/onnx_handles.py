"""Save a hand-built ONNX graph (onnx.helper) and describe it as a ModelHandle, for quantize tests."""
from __future__ import annotations

from pathlib import Path

import onnx

from slimline.core.handle import ModelHandle, TensorSpec


def save_onnx(model: onnx.ModelProto, path: Path, inputs: dict[str, list], outputs: dict[str, list]) -> ModelHandle:
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return ModelHandle(path=str(path), format="onnx", family="onnx", files=[str(path)],
                       inputs=[TensorSpec(name=k, shape=v) for k, v in inputs.items()],
                       outputs=[TensorSpec(name=k, shape=v) for k, v in outputs.items()],
                       bytes_on_disk=path.stat().st_size)
