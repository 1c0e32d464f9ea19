"""Export one model variant to a deployable file and prove the file is faithful.

``export_model`` writes into a hidden staging folder, loads the written file back
with the runtime that will serve it (onnxruntime, torch.jit, torch.export,
safetensors), compares it with the source model on the evaluation data (or
labelled random inputs) and only then moves it into place. A parity failure or a
cancel leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from slimline.core.export import parity as par
from slimline.core.export.records import (
    FORMATS,
    LM_FORMATS,
    ExportError,
    ExportRecord,
    Parity,
    file_entry,
    model_sha256,
    sha256_file,
)
from slimline.core.export.staging import Staging, refuse_existing
from slimline.core.handle import ModelHandle
from slimline.core.onnx_export import EXTERNAL_DATA_LIMIT, OnnxExportFailed, export_torch_to_onnx, onnx_opset, save_onnx

ALIASES = {"torchscript": "torchscript", "ts": "torchscript", "jit": "torchscript", "pt2": "pt2",
           "torch_export": "pt2", "torch.export": "pt2", "onnx": "onnx", "safetensors": "safetensors",
           "weights": "safetensors", "onnx-genai": "onnx-genai", "genai": "onnx-genai", "onnx-genai-fp32": "onnx-genai",
           "onnx-genai-fp16": "onnx-genai-fp16", "genai-fp16": "onnx-genai-fp16", "onnx-genai-int4": "onnx-genai-int4",
           "genai-int4": "onnx-genai-int4", "onnx-logits": "onnx-logits", "logits": "onnx-logits"}
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2", "safetensors": ".safetensors"}
Progress = Callable[[float, str], None]


def normalize_format(fmt: str) -> str:
    key = str(fmt).strip().lower()
    if key not in ALIASES:
        raise ExportError(f"unknown export format {fmt!r}", subject="--format",
                          hint=f"use one of: {', '.join(FORMATS)} (or 'bundle')")
    return ALIASES[key]


def safe_name(text: str) -> str:
    """A file-name stem without path separators or odd characters."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return stem or "model"


def default_name(handle: ModelHandle) -> str:
    p = Path(handle.path)
    return safe_name(p.name if p.is_dir() else p.stem)


def output_names(fmt: str, name: str, external: bool = False) -> list[str]:
    if fmt in LM_FORMATS:  # a folder: the genai model (or logits ONNX) with its tokenizer
        from slimline.core.export.lm import folder_name

        return [folder_name(fmt, name)]
    names = [name + SUFFIX[fmt]]
    if fmt == "onnx" and external:
        names.append(f"{name}.data")
    return names


def _editable(handle: ModelHandle) -> bool:
    return handle.format in ("slimline_torch", "hf", "pickle_module")


def check_fits(handle: ModelHandle, fmt: str) -> None:
    """Refuse combinations that cannot work, before anything is computed."""
    if fmt in LM_FORMATS:
        from slimline.core.export.lm import check_lm_fits

        check_lm_fits(handle, fmt)
        return
    if not handle.capabilities.run and fmt != "safetensors":
        raise ExportError(f"this model cannot be run, so it cannot be exported as {fmt} and verified "
                          f"({handle.capabilities.reason or 'weights only'})", subject=handle.path,
                          hint="export it as safetensors, or open the model with its architecture")
    if fmt in ("torchscript", "pt2") and handle.family != "torch":
        raise ExportError(f"{fmt} export needs a torch variant; this one is {handle.family} ({handle.format})",
                          subject=handle.path,
                          hint="pick a torch step of the run with --step (one before 'Convert to ONNX'), "
                               "or export this variant as onnx")
    if fmt == "torchscript" and handle.format == "torch_export":
        raise ExportError("a torch.export (.pt2) program cannot be turned into TorchScript", subject=handle.path,
                          hint="export it as pt2 or onnx, or start from the eager model")
    if fmt == "pt2" and handle.format == "torchscript":
        raise ExportError("a TorchScript module cannot be re-exported with torch.export", subject=handle.path,
                          hint="export it as torchscript or onnx, or start from the eager model")


def export_model(handle: ModelHandle, fmt: str, out_dir: str | Path, *, force: bool = False,
                 data: Any = None, cancel: Any = None, name: str | None = None,
                 progress: Progress | None = None, external_data: bool | None = None,
                 source_info: dict[str, Any] | None = None, lm_context_length: int = 0) -> ExportRecord:
    """Write ``handle`` as ``fmt`` into ``out_dir``, verified; returns the record.

    ``lm_context_length``: an onnx-genai* export serves at most that many positions (0: the model's own).
    ``data``: Dataset or dataset path for the parity check (None → labelled random inputs).
    ``external_data``: ONNX weights in ``<name>.data`` (None = only when the model is over ~2 GB).
    Raises ExportError/ParityError (nothing written), Cancelled (nothing written).
    """
    fmt = normalize_format(fmt)
    check_fits(handle, fmt)
    name = safe_name(name) if name else default_name(handle)
    out = Path(out_dir)
    refuse_existing(out, output_names(fmt, name, bool(external_data)), force)
    t0 = time.perf_counter()
    try:
        with Staging(out) as st:
            rec = write_verified(handle, fmt, st.dir, name, data=data, cancel=cancel, progress=progress,
                                 external_data=external_data, lm_context_length=lm_context_length)
            if cancel is not None:
                cancel.raise_if_cancelled()
            _report(progress, 0.97, "moving the verified files into place")
            st.commit(force)
    except OSError as exc:  # disk full / read-only folder while staging: the staging dir is gone already
        raise ExportError(f"could not write the export ({exc.strerror or exc}); nothing was exported",
                          subject=str(out), hint="free disk space or choose a writable output folder") from None
    rec.files = [e.model_copy(update={"path": str(out / e.path)}) for e in rec.files]
    rec.path = str(out / rec.path)
    rec.source.update(source_info or {})
    rec.duration_s = time.perf_counter() - t0
    _report(progress, 1.0, "done")
    return rec


def _report(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(fraction, message)


def write_verified(handle: ModelHandle, fmt: str, dest: Path, name: str, *, data: Any = None,
                   cancel: Any = None, progress: Progress | None = None,
                   external_data: bool | None = None, lm_context_length: int = 0) -> ExportRecord:
    """Write into ``dest`` (a staging folder) and verify; file paths in the record are relative to it."""
    fmt = normalize_format(fmt)
    check_fits(handle, fmt)
    if fmt in LM_FORMATS:
        from slimline.core.export.lm import folder_name, write_lm

        return write_lm(handle, fmt, dest, folder_name(fmt, name), name=name, data=data, cancel=cancel,
                        progress=progress, context_length=lm_context_length)
    _report(progress, 0.02, "preparing parity data")
    dataset = par.parity_data(handle, data) if handle.capabilities.run else None
    ref: list[Any] = []
    src_rt = ""
    if dataset is not None:
        _report(progress, 0.08, "running the source model")
        ref, src_rt = par.source_outputs(handle, dataset, cancel)
    if cancel is not None:
        cancel.raise_if_cancelled()
    _report(progress, 0.3, f"writing {fmt}")
    writer = {"onnx": _write_onnx, "torchscript": _write_torchscript, "pt2": _write_pt2,
              "safetensors": _write_safetensors}[fmt]
    main, notes, verify = writer(handle, dest, name, dataset, external_data)
    if cancel is not None:
        cancel.raise_if_cancelled()
    _report(progress, 0.6, "loading the written file back and checking parity")
    parity: Parity = verify(ref, dataset, src_rt, cancel)
    files = [file_entry(p, dest) for p in sorted(dest.rglob("*")) if p.is_file()]
    return ExportRecord(format=fmt, name=name, path=main.relative_to(dest).as_posix(), files=files,
                        bytes=sum(f.bytes for f in files), sha256=sha256_file(main), parity=parity,
                        source={"path": handle.path, "format": handle.format, "family": handle.family,
                                "sha256": model_sha256(handle.files, handle.path)},
                        external_data=any(f.path.endswith(".data") for f in files), notes=notes)


# --------------------------------------------------------------------------- helpers


def _outputs_verifier(runner_factory: Callable[[], par.Runner], precision: str, runtime: str,
                      identical: bool = False) -> Callable:
    def verify(ref: list[Any], dataset: Any, src_rt: str, cancel: Any) -> Parity:
        return par.check_outputs(ref, runner_factory(), dataset, precision=precision, runtime=runtime,
                                 source_runtime=src_rt, cancel=cancel, identical=identical)

    return verify


def _forward_by_keyword(module: Any, names: list[str]) -> bool:
    import inspect

    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return False
    return len(names) > 1 and all(n in params for n in names)


def _example(handle: ModelHandle, dataset: Any) -> dict[str, Any]:
    """Example tensors of ≥2 rows (a dynamic batch needs an example batch of at least 2)."""
    import numpy as np
    import torch

    from slimline.core.data import np_dtype

    rows = dataset.take(2)
    out = {}
    for s in handle.inputs:
        arr = np.asarray(rows.inputs[s.name]).astype(np_dtype(s.dtype), copy=False)
        if arr.shape[0] < 2:
            arr = np.concatenate([arr, arr])
        out[s.name] = torch.from_numpy(np.ascontiguousarray(arr))
    return out


def _dynamic_shapes(handle: ModelHandle, all_dims: bool) -> dict[str, dict[int, Any]]:
    """torch.export dims: the batch dim (and, if ``all_dims``, every named dynamic dim)."""
    import torch

    dims: dict[str, Any] = {}
    spec: dict[str, dict[int, Any]] = {}
    for s in handle.inputs:
        spec[s.name] = {}
        for i, d in enumerate(s.shape):
            if isinstance(d, str) and (i == 0 or all_dims):
                key = "batch" if i == 0 else safe_name(d)
                dims.setdefault(key, torch.export.Dim(key))
                spec[s.name][i] = dims[key]
    return spec


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """torch 2.13 warns that torch.jit is deprecated on every call; TorchScript export is still asked for."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        yield


def _copy(src: str | Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


# --------------------------------------------------------------------------- ONNX


def _onnx_bytes(model: Any) -> int:
    return sum(len(t.raw_data) or 0 for t in model.graph.initializer) + model.ByteSize()


def _write_onnx(handle: ModelHandle, dest: Path, name: str, dataset: Any, external: bool | None):
    path = dest / f"{name}.onnx"
    notes: list[str] = []
    identical = False
    if handle.family == "onnx":
        files = handle.files or [handle.path]
        if len(files) == 1 and not external:
            _copy(handle.path, path)
            identical = True
            notes.append("the pipeline's ONNX file, copied byte for byte")
        else:
            from slimline.core.models import load_onnx

            model = load_onnx(handle, load_external=True)
            use_ext = external if external is not None else _onnx_bytes(model) > EXTERNAL_DATA_LIMIT
            save_onnx(model, path, use_ext)
            notes.append("re-saved with weights in " + (f"{name}.data (external data)" if use_ext else "one file"))
    else:
        notes.append(_torch_to_onnx(handle, path, dataset, external))
    precision = par.onnx_precision(path)
    opset = onnx_opset(path)
    notes.append(f"precision {precision}, opset {opset}")
    verify = _outputs_verifier(lambda: par.ort_runner(path, handle.inputs), precision, "onnxruntime", identical)
    return path, notes, verify


def _torch_to_onnx(handle: ModelHandle, path: Path, dataset: Any, external: bool | None) -> str:
    """torch variant → ONNX with the torch.export-based exporter (legacy tracer for TorchScript)."""
    from slimline.core.lm.convert import causal_lm_config
    from slimline.core.models import load_torch_runnable

    names = [s.name for s in handle.inputs]
    legacy = handle.format == "torchscript"
    cfg = causal_lm_config(handle) if not legacy else None
    if cfg is not None:  # a causal LM: its logits without the cache object torch.export cannot trace
        return _lm_logits_to_onnx(handle, path, cfg, external)
    module = load_torch_runnable(handle)
    # the legacy tracer marks every batch dim; torch.export only the dims the model declares symbolic
    dynamic = names if legacy else [s.name for s in handle.inputs if s.shape and isinstance(s.shape[0], str)]
    try:
        export_torch_to_onnx(module, _example(handle, dataset), path, input_names=names,
                             output_names=[s.name for s in handle.outputs], opset=18,
                             exporter="legacy" if legacy else "dynamo", dynamic_batch=dynamic,
                             external_data=external)
    except OnnxExportFailed as exc:
        raise ExportError(exc.message, subject=handle.path,
                          hint="export as torchscript or pt2 instead, or replace the unsupported op") from exc
    return (f"exported from torch with the {'legacy TorchScript' if legacy else 'torch.export-based'} "
            f"exporter (opset 18, dynamic batch)")


def _lm_logits_to_onnx(handle: ModelHandle, path: Path, cfg: dict[str, Any], external: bool | None) -> str:
    from slimline.core.lm.convert import export_logits_onnx
    from slimline.core.models import load_eager_module

    try:
        export_logits_onnx(load_eager_module(handle), path, vocab_size=int(cfg.get("vocab_size") or 2),
                           external_data=external)
    except OnnxExportFailed as exc:
        raise ExportError(exc.message, subject=handle.path, hint="export as onnx-genai (the model builder) "
                                                                 "instead") from exc
    return ("causal language model: exported its logits (use_cache=False, batch and sequence dynamic) with the "
            "torch.export-based exporter, opset 18; for a KV-cache model that generates fast, export onnx-genai")


# --------------------------------------------------------------------------- torch


def _write_torchscript(handle: ModelHandle, dest: Path, name: str, dataset: Any, external: bool | None):
    import torch

    path = dest / f"{name}.pt"
    names = [s.name for s in handle.inputs]
    outs = [s.name for s in handle.outputs]
    if handle.format == "torchscript":
        _copy(handle.path, path)
        note = "the TorchScript file, copied byte for byte"
        by_kw = False
    else:
        from slimline.core.models import load_eager_module

        module = load_eager_module(handle).eval()
        by_kw = _forward_by_keyword(module, names)
        with _quiet_jit():
            scripted, note = _script_or_trace(module, handle, dataset, names, by_kw)
            torch.jit.save(scripted, str(path))

    def factory() -> par.Runner:
        with _quiet_jit():
            loaded = torch.jit.load(str(path), map_location="cpu").eval()
        return par.torch_runner(loaded, names, by_keyword=by_kw, output_names=outs)

    return path, [note], _outputs_verifier(factory, "fp32", "torch.jit.load", handle.format == "torchscript")


def _script_or_trace(module: Any, handle: ModelHandle, dataset: Any, names: list[str],
                     by_kw: bool) -> tuple[Any, str]:
    """Script first (keeps control flow and dynamic shapes); trace when the model does not script."""
    import torch

    try:
        scripted = torch.jit.script(module)
        note = "torch.jit.script of the eager module (control flow kept)"
    except Exception:  # many real models do not script; tracing records one path
        example = _example(handle, dataset)
        try:
            with torch.no_grad():
                if by_kw:
                    scripted = torch.jit.trace(module, example_kwarg_inputs=example, strict=False,
                                               check_trace=False)
                else:
                    scripted = torch.jit.trace(module, tuple(example[n] for n in names), strict=False,
                                               check_trace=False)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ExportError(f"TorchScript export failed: {first}", subject=handle.path,
                              hint="export as onnx or pt2 instead") from exc
        note = "torch.jit.trace of the eager module (scripting failed; one code path recorded)"
    return scripted, note


def _write_pt2(handle: ModelHandle, dest: Path, name: str, dataset: Any, external: bool | None):
    import torch

    path = dest / f"{name}.pt2"
    names = [s.name for s in handle.inputs]
    outs = [s.name for s in handle.outputs]
    by_kw = False
    if handle.format == "torch_export":
        _copy(handle.path, path)
        note = "the .pt2 archive, copied byte for byte"
    else:
        from slimline.core.models import load_eager_module

        module = load_eager_module(handle).eval()
        by_kw = _forward_by_keyword(module, names)
        example = _example(handle, dataset)
        ep = None
        errors = []
        for all_dims in (True, False):
            dyn = _dynamic_shapes(handle, all_dims)
            try:
                if by_kw:
                    ep = torch.export.export(module, (), kwargs=example, dynamic_shapes=dyn)
                else:
                    ep = torch.export.export(module, tuple(example[n] for n in names),
                                             dynamic_shapes=tuple(dyn[n] or None for n in names))
                break
            except Exception as exc:  # retry with fewer dynamic dims
                errors.append((str(exc).strip().splitlines() or [type(exc).__name__])[0][:300])
        if ep is None:
            raise ExportError(f"torch.export failed: {errors[-1]}", subject=handle.path,
                              hint="export as onnx or torchscript instead")
        torch.export.save(ep, str(path))
        note = "torch.export.export of the eager module (dynamic batch), saved with torch.export.save"

    def factory() -> par.Runner:
        # our own freshly written file (or a .pt2 the user already trusted to run it)
        loaded = torch.export.load(str(path)).module()
        return par.torch_runner(loaded, names, by_keyword=by_kw, output_names=outs)

    return path, [note, "loading a .pt2 unpickles: only load files you trust"], \
        _outputs_verifier(factory, "fp32", "torch.export.load", handle.format == "torch_export")


# --------------------------------------------------------------------------- weights


def _write_safetensors(handle: ModelHandle, dest: Path, name: str, dataset: Any, external: bool | None):
    path = dest / f"{name}.safetensors"
    meta = {"producer": "slimline", "source": Path(handle.path).name, "source_format": handle.format}
    if handle.family == "torch" and _editable(handle):
        return _torch_weights(handle, path, meta)
    expected = _weights_as_numpy(handle)
    try:
        from safetensors.numpy import load_file, save_file

        save_file(expected, str(path), metadata=meta)
    except Exception as exc:
        raise ExportError(f"these weights cannot be stored as safetensors: {exc}".splitlines()[0][:300],
                          subject=handle.path, hint="export the model as onnx instead") from exc
    precision = par.onnx_precision(handle.path) if handle.family == "onnx" else "other"

    def verify(ref: list[Any], dataset: Any, src_rt: str, cancel: Any) -> Parity:
        return par.check_weights(expected, load_file(str(path)), precision)

    return path, [f"{len(expected)} tensors; read back and compared bit for bit"], verify


def _weights_as_numpy(handle: ModelHandle) -> dict[str, Any]:
    import numpy as np

    if handle.family == "onnx":
        from onnx import numpy_helper

        from slimline.core.models import load_onnx

        model = load_onnx(handle, load_external=True)
        return {t.name: np.ascontiguousarray(numpy_helper.to_array(t)) for t in model.graph.initializer}
    if handle.format in ("torchscript", "torch_export"):
        from slimline.core.models import load_torch_runnable

        sd = load_torch_runnable(handle).state_dict()
        return {k: np.ascontiguousarray(v.detach().float().cpu().numpy() if str(v.dtype) == "torch.bfloat16"
                                        else v.detach().cpu().numpy()) for k, v in sd.items()}
    from slimline.core.models.weights import weight_source

    src = weight_source(handle)
    return {e.name: np.ascontiguousarray(src.array(e.name)) for e in src.entries}


def _torch_weights(handle: ModelHandle, path: Path, meta: dict[str, str]):
    import torch
    from safetensors.torch import load_model, save_model

    from slimline.core.models import load_eager_module

    module = load_eager_module(handle).eval()
    save_model(module, str(path), metadata=meta)
    names = [s.name for s in handle.inputs]
    outs = [s.name for s in handle.outputs]

    def verify(ref: list[Any], dataset: Any, src_rt: str, cancel: Any) -> Parity:
        # a fresh copy of the architecture with every float tensor set to NaN: only the
        # weights read from the file can make it reproduce the source outputs
        fresh = load_eager_module(handle).eval()
        with torch.no_grad():
            for t in list(fresh.parameters()) + list(fresh.buffers()):
                if t.is_floating_point():
                    t.fill_(float("nan"))
        missing, unexpected = load_model(fresh, str(path), strict=True)
        if missing or unexpected:
            raise par.ParityError(f"weights file does not fit the model: missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]}", subject=str(path))
        runner = par.torch_runner(fresh, names, by_keyword=_forward_by_keyword(fresh, names), output_names=outs)
        return par.check_outputs(ref, runner, dataset, precision=par.torch_precision(fresh),
                                 runtime="safetensors → eager torch module", source_runtime=src_rt,
                                 cancel=cancel)

    return path, ["state dict as safetensors (shared tensors stored once); verified by loading it into "
                  "a NaN-filled copy of the architecture"], verify
