"""Running models: one Session API over onnxruntime and torch.

Every number Slimline shows comes from running a model, so the session records
what it ran on (provider, device name, threads actually used). Feeds are cast
to the model's declared dtypes; a missing input raises DataError naming it.
"""
from __future__ import annotations

import inspect
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from slimline.core.data import Dataset, check_dataset, np_dtype
from slimline.core.errors import DataError, ModelLoadError, SlimlineError
from slimline.core.handle import ModelHandle, TensorSpec

_ORT_CACHE: dict[tuple[str, int, str, int], Session] = {}
# Torch modules can be big: keep only the last few (evaluation opens the same model per batch size).
_TORCH_CACHE: dict[tuple[str, int, str, int], Session] = {}
_TORCH_CACHE_SIZE = 2
_CACHE_LOCK = threading.Lock()


def cpu_name() -> str:
    """CPU model name from /proc/cpuinfo (platform fallback elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "processor\t: ")) and ":" in line:
                    value = line.split(":", 1)[1].strip()
                    if value and not value.isdigit():
                        return value
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def resolve_threads(threads: int | None) -> int:
    """0/None means all logical cores; the real number is returned so timings can be reproduced."""
    threads = threads or 0
    if threads < 0:
        raise DataError(f"threads must be ≥ 0 (0 = all cores), got {threads}", subject="threads")
    return threads or (os.cpu_count() or 1)


class Session:
    """A loaded, runnable model. ``run`` takes numpy feeds and returns numpy outputs."""

    def __init__(self, *, input_specs: list[TensorSpec], output_names: list[str], provider: str,
                 device_name: str, threads: int, runner: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
                 handle: ModelHandle | None = None) -> None:
        self.input_specs = input_specs
        self.input_names = [s.name for s in input_specs]
        self.output_names = output_names
        self.provider = provider
        self.device_name = device_name
        self.threads = threads
        self.handle = handle
        self._runner = runner
        self._dtypes = {s.name: np_dtype(s.dtype) for s in input_specs}

    def prepare(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feeds in the model's dtypes, contiguous, declared inputs only."""
        out: dict[str, np.ndarray] = {}
        for name in self.input_names:
            if name not in feeds:
                raise DataError(f"model input '{name}' is missing from the feeds (got {sorted(feeds)})",
                                subject=name, hint=f"provide arrays for all inputs: {self.input_names}")
            arr = np.asarray(feeds[name])
            want = self._dtypes[name]
            if arr.dtype != want:
                arr = arr.astype(want)
            out[name] = np.ascontiguousarray(arr)
        return out

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; feeds already prepared (right dtype, contiguous) pass through cheaply.

        A runtime error (shapes the graph rejects, a broken node) becomes a DataError naming
        the model and the input shapes, never a raw library exception.
        """
        prepared = self.prepare(feeds)
        try:
            return self._runner(prepared)
        except (SlimlineError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime/torch raise assorted types
            raise self._run_error(exc, prepared) from None

    def run_prepared(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run feeds from :meth:`prepare` without re-checking (used inside timing loops)."""
        try:
            return self._runner(feeds)
        except (SlimlineError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - same clean message as run()
            raise self._run_error(exc, feeds) from None

    def _run_error(self, exc: BaseException, feeds: dict[str, np.ndarray]) -> DataError:
        """A DataError naming the input shapes, the failing node and the runtime's message without its prefix."""
        shapes = {k: list(np.shape(v)) for k, v in feeds.items()}
        detail, node = clean_runtime_message(exc)
        where = f" at node '{node}'" if node else ""
        named = {d for spec in self.input_specs for d in spec.shape if isinstance(d, str)}
        known = self.handle.dim_defaults if self.handle is not None else {}
        dims = ", ".join(f"{k}={v}" for k, v in known.items() if k in named)
        return DataError(
            f"the model failed to run on inputs {shapes}{where}: {detail}",
            subject=self.handle.path if self.handle is not None else self.provider,
            hint="the input sizes may not be ones the model was made for: set its input dims to the sizes it "
                 "expects (--dim NAME=VALUE" + (f"; now {dims}" if dims else "") + "), check the dtypes against "
                 "the declared inputs (the layer table shows them), or re-export the model")

    def __repr__(self) -> str:
        return f"Session({self.provider}, threads={self.threads}, inputs={self.input_names})"


_ORT_PREFIX = re.compile(r"^\s*(?:\w+:\s*)?\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*[A-Z_]+\s*:\s*")
_ORT_NODE = re.compile(r"running (\w+) node\. Name:\s*'([^']*)'")
_ORT_NOISE = re.compile(r"Non-zero status code returned while running \w+ node\. Name:\s*'[^']*'\s*"
                        r"(?:Status Message:\s*)?")
_ORT_SOURCE = re.compile(r"^[\w/.-]+\.(?:cc|h|cpp):\d+\s+(?:\w+(?:::\w+)*\s+)?")  # "concat.cc:154 PrepareForCompute "


def clean_runtime_message(exc: BaseException) -> tuple[str, str]:
    """(message, innermost failing node or "") from a runtime exception, without onnxruntime's
    "[ONNXRuntimeError] : 1 : FAIL :" prefix or the exception's type name: users act on the text, not the code."""
    text = " ".join(str(exc).split()) or "no message"
    text = _ORT_PREFIX.sub("", text)
    nodes = _ORT_NODE.findall(text)
    node = f"{nodes[-1][1]} ({nodes[-1][0]})" if nodes else ""
    text = _ORT_NOISE.sub("", text).strip() or text
    text = _ORT_SOURCE.sub("", text) or text
    return text[:400], node


# --------------------------------------------------------------------------- onnxruntime

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(bool)": "bool", "tensor(bfloat16)": "bfloat16",
}


def ort_numpy_dtype(ort_type: str, default: str | None = "float32") -> np.dtype | None:
    """numpy dtype to feed an onnxruntime input of type ``ort_type`` ('tensor(float)' …).

    Unknown types give ``default`` (None: the caller leaves such feeds as they are).
    """
    name = _ORT_TYPES.get(ort_type, default)
    return np_dtype(name) if name is not None else None


def ort_inference_session(model: str | Path | bytes, *, threads: int | None = 0, device: str = "cpu",
                          optimize: bool = True, require_device: bool = True,
                          external_data_dir: str | Path | None = None) -> Any:
    """The one place an ``onnxruntime.InferenceSession`` is created (runtime, plugins, export parity).

    Why one owner: every number must come from sessions configured the same way, so
    thread count (0/None = all cores, recorded), one inter-op thread, sequential
    execution, graph optimisation (``optimize=False`` runs the graph as written, for
    per-node error probes), quiet logging and provider choice are decided here.
    ``device='cuda'`` raises when onnxruntime has no CUDA provider unless
    ``require_device=False`` (then it falls back to the CPU).
    External data: onnxruntime refuses locations that escape the model's folder; a
    model given as bytes reads its external data from ``external_data_dir`` (the folder
    of the file it came from), never from the working directory by accident.
    Raises ModelLoadError with onnxruntime's full message.
    """
    import onnxruntime as ort

    n_threads = resolve_threads(threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads = n_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif require_device:
            raise ModelLoadError("device 'cuda' asked for, but this onnxruntime has no CUDA provider",
                                 subject="device", hint="install onnxruntime-gpu, or measure on the CPU")
    elif device != "cpu":
        raise ModelLoadError(f"unknown device {device!r}", subject="device", hint="use 'cpu' or 'cuda'")
    if isinstance(model, (bytes, bytearray)):
        src: str | bytes = bytes(model)
        subject = "in-memory ONNX model"
        if external_data_dir is not None:
            so.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                        str(Path(external_data_dir).resolve()))
    else:
        src = subject = str(model)
    try:
        return ort.InferenceSession(src, sess_options=so, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        detail = str(exc).strip() or type(exc).__name__
        raise ModelLoadError(f"onnxruntime cannot load the model: {detail}"[:4000], subject=subject,
                             hint="check the model with onnx.checker, or re-export it") from None


def _ort_session(handle: ModelHandle, device: str, threads: int) -> Session:
    path = Path(handle.path)
    if not path.is_file():
        raise ModelLoadError("ONNX file not found", subject=str(path), hint="re-open the model")
    n_threads = resolve_threads(threads)
    key = (str(path.resolve()), path.stat().st_mtime_ns, device, n_threads)
    with _CACHE_LOCK:
        cached = _ORT_CACHE.get(key)
    if cached is not None:
        return cached
    sess = ort_inference_session(path, threads=n_threads, device=device)
    provider = sess.get_providers()[0]
    declared = {s.name: s for s in handle.inputs}
    specs = []
    for i in sess.get_inputs():
        dt = _ORT_TYPES.get(i.type, "float32")
        shape = list(i.shape) if i.shape is not None else []
        specs.append(TensorSpec(name=i.name, dtype=dt,
                                shape=[d if isinstance(d, int) else str(d or f"d{k}") for k, d in enumerate(shape)]
                                if shape else (declared[i.name].shape if i.name in declared else [])))
    out_names = [o.name for o in sess.get_outputs()]
    device_name = _gpu_name() if provider == "CUDAExecutionProvider" else cpu_name()

    fill: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    kv = handle.meta.get("kv_cache")
    if kv:  # a KV-cache decoder runs full sequences with an empty past (core.lm.genai)
        from slimline.core.lm.genai import full_sequence_feeds

        hidden, head, all_inputs = set(kv["filled_inputs"]), kv.get("head_size"), sess.get_inputs()
        window = kv.get("sliding_window")
        specs = [declared.get(s.name, s) for s in specs if s.name not in hidden]
        out_names = [o for o in out_names if o not in set(kv["present_outputs"])] or out_names[:1]

        def with_past(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return full_sequence_feeds(feeds, all_inputs, head, window)

        fill = with_past

    def runner(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return sess.run(out_names, feeds if fill is None else fill(feeds))

    session = Session(input_specs=specs, output_names=out_names, provider=provider, device_name=device_name,
                      threads=n_threads, runner=runner, handle=handle)
    with _CACHE_LOCK:
        _ORT_CACHE[key] = session
    return session


def clear_session_cache() -> None:
    """Forget cached onnxruntime sessions (frees their memory)."""
    with _CACHE_LOCK:
        _ORT_CACHE.clear()
        _TORCH_CACHE.clear()


def _file_key(handle: ModelHandle, device: str, threads: int) -> tuple[str, int, str, int]:
    path = Path(handle.path)
    files = [Path(f) for f in (handle.files or [handle.path])]
    mtime = max((f.stat().st_mtime_ns for f in files if f.exists()), default=0)
    return (str(path.resolve()), mtime, device, threads)


def _gpu_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # torch missing or broken CUDA: the name is informational only
        pass
    return "CUDA GPU"


# --------------------------------------------------------------------------- torch


def _load_torch(handle: ModelHandle) -> Any:
    from slimline.core.models import load_torch_runnable

    return load_torch_runnable(handle)


def _to_numpy_list(out: Any, names: list[str]) -> list[np.ndarray]:
    import torch

    if isinstance(out, torch.Tensor):
        items: list[Any] = [out]
    elif isinstance(out, dict) or hasattr(out, "keys"):  # dict or HF ModelOutput
        keys = list(out.keys())
        picked = [k for k in names if k in keys]
        items = [out[k] for k in (picked or keys)]
    elif isinstance(out, (list, tuple)):
        items = list(out)
    else:
        raise DataError(f"the model returned {type(out).__name__}, not tensors", subject="outputs")
    return [t.detach().float().cpu().numpy() if t.dtype == torch.bfloat16 else t.detach().cpu().numpy()
            for t in items if isinstance(t, torch.Tensor)]


def _torch_session(handle: ModelHandle, device: str, threads: int) -> Session:
    import torch

    if device not in ("cpu", "cuda"):
        raise ModelLoadError(f"unknown device {device!r}", subject="device", hint="use 'cpu' or 'cuda'")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' asked for, but torch sees no CUDA GPU", subject="device",
                             hint="measure on the CPU, or install a CUDA build of torch")
    if threads < 0:
        resolve_threads(threads)
    if threads > 0:
        torch.set_num_threads(threads)
    n_threads = torch.get_num_threads()
    key = _file_key(handle, device, n_threads)
    with _CACHE_LOCK:
        cached = _TORCH_CACHE.get(key)
    if cached is not None and cached.handle is not None and cached.handle.inputs == handle.inputs:
        return cached
    module = _load_torch(handle)
    if hasattr(module, "eval"):
        try:
            module.eval()
        except Exception:  # restricted .pt2 modules refuse eval(); they are inference-only anyway
            pass
    dev = torch.device(device)
    if hasattr(module, "to"):
        try:
            module = module.to(dev)
        except Exception:
            if device != "cpu":
                raise
    specs = list(handle.inputs)
    if not specs:
        raise ModelLoadError("the model declares no inputs", subject=handle.path,
                             hint="open the model with Slimline so its input specs are read")
    names = [s.name for s in specs]
    try:
        params = inspect.signature(module.forward).parameters
        by_keyword = all(n in params for n in names) and len(names) > 1
    except (TypeError, ValueError, AttributeError):
        by_keyword = False
    out_names = [s.name for s in handle.outputs]
    is_cuda = device == "cuda"

    def runner(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if torch.get_num_threads() != n_threads:  # torch threads are process-wide
            torch.set_num_threads(n_threads)
        with torch.inference_mode():
            tensors = {k: torch.from_numpy(v).to(dev, non_blocking=True) for k, v in feeds.items()}
            out = module(**tensors) if by_keyword else module(*[tensors[n] for n in names])
            if is_cuda:
                torch.cuda.synchronize()
            return _to_numpy_list(out, out_names)

    provider = "torch-cuda" if is_cuda else "torch-cpu"
    device_name = torch.cuda.get_device_name(dev) if is_cuda else cpu_name()
    if not out_names:
        out_names = ["output"]
    session = Session(input_specs=specs, output_names=out_names, provider=provider, device_name=device_name,
                      threads=n_threads, runner=runner, handle=handle)
    with _CACHE_LOCK:
        _TORCH_CACHE[key] = session
        while len(_TORCH_CACHE) > _TORCH_CACHE_SIZE:
            _TORCH_CACHE.pop(next(iter(_TORCH_CACHE)))
    return session


# --------------------------------------------------------------------------- public


def open_session(handle: ModelHandle, *, device: str = "cpu", threads: int = 0) -> Session:
    """A runnable session for ``handle``: onnxruntime for ONNX, torch for torch models.

    ``threads=0`` means all logical cores (onnxruntime) / torch's default; the
    session's ``threads`` says what was actually used.
    """
    if not handle.capabilities.run:
        raise ModelLoadError(f"this model cannot run: {handle.capabilities.reason or 'weights only'}",
                             subject=handle.path, hint="open a runnable model (ONNX, TorchScript, or a torch archive)")
    if handle.family == "onnx" or handle.format == "onnx":
        return _ort_session(handle, device, threads)
    if handle.family == "torch":
        return _torch_session(handle, device, threads)
    raise ModelLoadError(f"format '{handle.format}' holds weights only and cannot run", subject=handle.path,
                         hint="open the model together with its architecture (ONNX, TorchScript, HF folder)")


def predict(handle_or_session: ModelHandle | Session, dataset: Dataset, *, batch_size: int = 64,
            device: str = "cpu", threads: int = 0,
            progress: Callable[[float, str], None] | None = None) -> list[np.ndarray]:
    """Run the model over every row of ``dataset``; one array per output, rows concatenated."""
    if isinstance(handle_or_session, Session):
        session = handle_or_session
        if session.handle is not None:
            check_dataset(dataset, session.handle)
    else:
        check_dataset(dataset, handle_or_session)
        session = open_session(handle_or_session, device=device, threads=threads)
    from slimline.core.data import fixed_batch

    fixed = fixed_batch(session.handle) if session.handle is not None else None
    batch_size = fixed or batch_size  # a model exported for batch 1 takes its rows one at a time
    parts: list[list[np.ndarray]] = []
    n = len(dataset)
    done = 0
    for feeds, _ in dataset.batches(batch_size):
        outs = session.run(feeds)
        parts.append(outs)
        done = min(done + batch_size, n)
        if progress is not None:
            progress(done / max(n, 1), f"{done}/{n} rows")
    if not parts:
        return []
    return [_join([p[i] for p in parts]) for i in range(len(parts[0]))]


def _join(parts: list[np.ndarray]) -> np.ndarray:
    """Batches of one output joined by rows; a scalar or shape-varying output keeps the last batch's value."""
    if len(parts) == 1:
        return parts[0]
    if any(p.ndim == 0 for p in parts) or len({p.shape[1:] for p in parts}) > 1:
        return parts[-1]
    return np.concatenate(parts, axis=0)
