"""ONNX in/out for weight-editing steps: load with external data, save atomically.

Outputs keep external data inside the output folder (one ``<name>.data`` file beside the
model) when the input used external data or the model nears protobuf's 2 GB limit.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimline.core.errors import ModelLoadError
from slimline.core.handle import ModelHandle

if TYPE_CHECKING:  # pragma: no cover
    import onnx

_PROTO_LIMIT = 1_800_000_000


def load_onnx_model(handle: ModelHandle, *, load_external: bool = True) -> "onnx.ModelProto":
    """Load the ONNX graph; external data only from the model's own folder."""
    import onnx

    try:
        model = onnx.load(handle.path, load_external_data=False)
        if load_external and uses_external_data(model):
            from onnx.external_data_helper import load_external_data_for_model

            base = Path(handle.path).resolve().parent
            for t in _external_tensors(model):
                loc = next((e.value for e in t.external_data if e.key == "location"), "")
                target = (base / loc).resolve()
                if base not in target.parents and target != base:
                    raise ModelLoadError(f"external data {loc!r} lies outside the model folder",
                                         subject=handle.path, hint="keep weight files next to the .onnx file")
            load_external_data_for_model(model, str(base))
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot read ONNX model: {exc}", subject=handle.path,
                             hint="check that the file is a complete .onnx file") from None
    return model


def _external_tensors(model: "onnx.ModelProto") -> list[Any]:
    import onnx

    return [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]


def uses_external_data(model: "onnx.ModelProto") -> bool:
    return bool(_external_tensors(model))


def save_onnx_model(model: "onnx.ModelProto", path: Path, *, external: bool = False) -> list[Path]:
    """Write ``model`` to ``path`` (and ``path.data`` when external); never half-written."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = sum(len(t.raw_data) for t in model.graph.initializer)
    external = external or size > _PROTO_LIMIT
    data_name = path.name + ".data"
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tmp_model = tmp_dir / path.name
        if external:
            onnx.save_model(model, str(tmp_model), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
        else:
            onnx.save_model(model, str(tmp_model))
        files = [path]
        if (tmp_dir / data_name).exists():
            os.replace(tmp_dir / data_name, path.parent / data_name)
            files.append(path.parent / data_name)
        os.replace(tmp_model, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return files


def onnx_output_handle(path: Path, files: list[Path], like: ModelHandle,
                       model: "onnx.ModelProto") -> ModelHandle:
    """Handle for a written ONNX file: I/O specs carried over, sizes and counts re-measured."""
    import numpy as np

    params = int(sum(int(np.prod(t.dims)) if len(t.dims) else 1 for t in model.graph.initializer))
    try:
        from slimline.core.models import open_model
    except ImportError:
        open_model = None  # the models module is optional for this step
    if open_model is not None:
        try:
            return open_model(path)
        except Exception:
            pass
    return like.model_copy(update={
        "path": str(path), "files": [str(f) for f in files], "param_count": params,
        "bytes_on_disk": sum(f.stat().st_size for f in files), "format": "onnx", "family": "onnx",
    })


def initializer_map(model: "onnx.ModelProto") -> dict[str, Any]:
    return {t.name: t for t in model.graph.initializer}


def node_attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default
