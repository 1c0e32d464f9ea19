"""The teacher: any runnable model (torch archive, other torch formats, or ONNX via onnxruntime).

Teacher logits are computed once for all training rows (no augmentation), so
the teacher costs one inference pass and never needs gradients.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from slimline.core.errors import ModelLoadError, SlimlineError, StepFailed
from slimline.core.handle import ModelHandle
from slimline.plugins.distill.params import TEACHER_INPUT, TEACHER_SOURCE
from slimline.plugins.distill.torchio import as_model_array, call_module, input_order

if TYPE_CHECKING:  # pragma: no cover
    from slimline.core.plugin import CancelToken

_MAX_LOGIT_BYTES = 4 << 30


def open_model_file(path: Path, field: str) -> ModelHandle:
    """Open a teacher/student file with the engine's opener (fallback: archive or .onnx)."""
    if not path.exists():
        raise StepFailed(f"{path} does not exist", subject=field,
                         hint=f"give an existing model file in '{field}' (or 'source' for the pipeline's input model)")
    try:
        from slimline.core.models import open_model
    except ImportError:  # opener not available: handle the two formats we can read ourselves
        return _open_minimal(path, field)
    try:
        return open_model(path)
    except SlimlineError as exc:
        raise StepFailed(f"cannot open {path.name}: {exc.message}", subject=field, hint=exc.hint) from exc


def _open_minimal(path: Path, field: str) -> ModelHandle:
    from slimline.core.torchmodel import handle_for_archive, read_archive_meta

    if path.suffix.lower() == ".onnx":
        return ModelHandle(path=str(path), format="onnx", family="onnx", files=[str(path)])
    if path.suffix.lower() == ".safetensors" and read_archive_meta(path) is not None:
        return handle_for_archive(path)
    raise StepFailed(f"cannot open {path.name} as a model", subject=field,
                     hint="use a Slimline torch archive or an ONNX file")


def resolve_teacher(spec: str, model: ModelHandle, source: ModelHandle | None) -> ModelHandle:
    if spec == TEACHER_SOURCE:
        if source is None:
            raise StepFailed("teacher is 'source' but the pipeline's input model is not known",
                             subject="teacher", hint="set 'teacher' to a model file path")
        return source
    if spec == TEACHER_INPUT:
        return model
    return open_model_file(Path(spec).expanduser(), "teacher")


class Teacher:
    """Runs a teacher batch by batch and returns numpy logits."""

    def __init__(self, handle: ModelHandle, device: str, threads: int | None) -> None:
        self.handle = handle
        self.device = device
        if handle.family == "weights" or not handle.capabilities.run:
            raise StepFailed(f"the teacher {handle.name} cannot run: {handle.capabilities.reason or 'weights only'}",
                             subject="teacher", hint="use a runnable teacher (ONNX, TorchScript, Slimline archive)")
        self.kind = "onnx" if handle.family == "onnx" else "torch"
        if self.kind == "onnx":
            self._init_onnx(threads)
        else:
            self._init_torch()

    # -- ONNX ------------------------------------------------------------
    def _init_onnx(self, threads: int | None) -> None:
        from slimline.core.runtime import ort_inference_session, ort_numpy_dtype

        try:  # on 'cuda' without a CUDA onnxruntime the teacher runs on the CPU: it only costs time
            self._sess = ort_inference_session(self.handle.path, threads=threads, device=self.device,
                                               require_device=False)
        except ModelLoadError as exc:
            raise StepFailed(f"cannot load the teacher {self.handle.name}: {exc.message}",
                             subject="teacher", hint="check the ONNX file (e.g. run it through the inspector)") from exc
        self.input_names = [i.name for i in self._sess.get_inputs()]
        self._in_types = {i.name: ort_numpy_dtype(i.type, None) for i in self._sess.get_inputs()}
        first = self._sess.get_inputs()[0].shape
        self.fixed_batch = first[0] if first and isinstance(first[0], int) and first[0] > 0 else None
        outs = [o.name for o in self._sess.get_outputs()]
        self._output = "logits" if "logits" in outs else outs[0]

    # -- torch -----------------------------------------------------------
    def _init_torch(self) -> None:
        if self.handle.format == "slimline_torch":
            from slimline.core.torchmodel import load_torch_module

            module = load_torch_module(self.handle)
        else:
            from slimline.core.models import load_torch_runnable

            module = load_torch_runnable(self.handle)
        self._module = module.to(self.device).eval()
        self.input_names = [s.name for s in self.handle.inputs]
        self.fixed_batch = None

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self.kind == "onnx":
            typed = {k: (v.astype(self._in_types[k]) if self._in_types.get(k) else v) for k, v in feeds.items()}
            try:
                return np.asarray(self._sess.run([self._output], typed)[0], dtype=np.float32)
            except Exception as exc:  # onnxruntime's own error types
                raise StepFailed(f"the ONNX teacher failed on the training data: {str(exc).splitlines()[0][:300]}",
                                 subject="teacher", hint="check that the data's arrays match the teacher's inputs "
                                                         f"{self.input_names}") from exc
        import torch

        with torch.inference_mode():
            tfeeds = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in feeds.items()}
            return call_module(self._module, tfeeds).float().cpu().numpy()

    def logits(self, inputs: dict[str, np.ndarray], *, batch_size: int, cancel: "CancelToken",
               progress: Callable[[float], None] | None = None) -> np.ndarray:
        """Teacher logits for every row of ``inputs`` (dataset names mapped to the model's)."""
        order = input_order(inputs, self.input_names)
        positional = len(order) == 1 and order[0] not in self.input_names and len(self.input_names) == 1
        names = self.input_names if positional else order
        arrays = [as_model_array(inputs[k]) for k in order]
        n = len(arrays[0])
        bs = self.fixed_batch or batch_size
        chunks: list[np.ndarray] = []
        for start in range(0, n, bs):
            cancel.raise_if_cancelled()
            batch = [a[start:start + bs] for a in arrays]
            rows = len(batch[0])
            if self.fixed_batch and rows < bs:  # pad a fixed-batch model's last batch, then cut
                batch = [np.concatenate([b, np.repeat(b[-1:], bs - rows, axis=0)]) for b in batch]
            out = self._run(dict(zip(names, batch)))[:rows]
            chunks.append(out)
            if sum(c.nbytes for c in chunks) > _MAX_LOGIT_BYTES:
                raise StepFailed("teacher outputs for the training set exceed 4 GiB",
                                 subject="teacher", hint="use a smaller training set")
            if progress is not None:
                progress(min(1.0, (start + rows) / n))
        return np.concatenate(chunks, axis=0)
