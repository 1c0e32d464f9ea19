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
    """A fresh, editable ONNX graph; external data only from the model's own folder.

    The folder check is the engine's (slimline.core.models.safe_paths, via load_onnx), so
    plugins and the model browser refuse exactly the same files.
    """
    from slimline.core.models import load_onnx

    try:
        return load_onnx(handle.path, load_external=load_external)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnx raises assorted errors on damaged files
        raise ModelLoadError(f"cannot read ONNX model: {exc}", subject=handle.path,
                             hint="check that the file is a complete .onnx file") from None


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
    from slimline.core.models import open_model

    try:
        return open_model(path)
    except Exception:  # noqa: BLE001 - fall back to the input's specs with re-measured sizes
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
