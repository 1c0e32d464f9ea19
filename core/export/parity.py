"""Parity checks: run the exported file with its own runtime and compare with the source.

Tolerances depend on the precision of the exported model (documented here and in
``slimline export --help``). The absolute limit scales with the output
magnitude: ``allowed = max_abs_rel * max(1, max |reference|)``.

| precision | max_abs_rel | mean cosine ≥ | top-1 agreement ≥ | why                                         |
|-----------|-------------|---------------|-------------------|---------------------------------------------|
| fp32      | 1e-3        | 0.9999        | 0.99              | same math; only kernel/fusion order differs  |
| fp16      | 1e-2        | 0.999         | 0.98              | half precision rounds at ~1e-3 relative     |
| int8      | 5e-2        | 0.99          | 0.97              | integer kernels may requantize differently  |
| mixed     | 5e-2        | 0.99          | 0.97              | treated like its lowest precision           |
| (copy)    | 1e-4        | 0.99999       | 0.99              | byte-identical file: any precision          |

The export is compared with the *variant being exported* (not with the pipeline's
original): a file that does not reproduce what was measured is refused.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from slimline.core.export.records import Parity, ParityError, Tolerance
from slimline.core.handle import ModelHandle

TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs_rel=1e-3, min_cosine=0.9999, min_top1=0.99),
    "fp16": Tolerance(max_abs_rel=1e-2, min_cosine=0.999, min_top1=0.98),
    "int8": Tolerance(max_abs_rel=5e-2, min_cosine=0.99, min_top1=0.97),
    "mixed": Tolerance(max_abs_rel=5e-2, min_cosine=0.99, min_top1=0.97),
    "other": Tolerance(max_abs_rel=5e-2, min_cosine=0.99, min_top1=0.97),
    # the exported file is byte-identical to the variant's: only run-to-run noise may differ
    "copy": Tolerance(max_abs_rel=1e-4, min_cosine=0.99999, min_top1=0.99),
}
PARITY_ROWS = 512          # rows of the evaluation data used (all rows of small sets)
RANDOM_ROWS = 32           # labelled random inputs when no data is given
BATCH = 64

_INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
             "MatMulInteger", "DynamicQuantizeLinear", "MatMulNBits", "QLinearAdd", "QGemm"}

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def onnx_precision(path: str | Path) -> str:
    """fp32 / fp16 / int8 / mixed, read from the graph's ops and initializer types."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    types = {t.data_type for t in model.graph.initializer}
    has_int8 = bool(ops & _INT8_OPS)
    has_fp16 = onnx.TensorProto.FLOAT16 in types or onnx.TensorProto.BFLOAT16 in types
    if has_int8 and has_fp16:
        return "mixed"
    if has_int8:
        return "int8"
    if has_fp16:
        return "fp16"
    return "fp32"


def torch_precision(module: Any) -> str:
    import torch

    kinds = {p.dtype for p in module.parameters()} if hasattr(module, "parameters") else set()
    if kinds & {torch.qint8, torch.quint8, torch.int8}:
        return "int8"
    if kinds & {torch.float16, torch.bfloat16}:
        return "fp16" if not kinds & {torch.float32} else "mixed"
    return "fp32"


def parity_data(handle: ModelHandle, data: Any) -> Any:
    """The rows to compare on: given dataset/path (first PARITY_ROWS rows) or labelled random inputs."""
    from slimline.core.data import Dataset, check_dataset, load_dataset, random_dataset

    if data is None:
        return random_dataset(handle, RANDOM_ROWS, seed=0)
    ds = data if isinstance(data, Dataset) else load_dataset(data, handle)
    check_dataset(ds, handle)
    return ds.take(PARITY_ROWS)


def source_outputs(handle: ModelHandle, dataset: Any, cancel: Any = None) -> tuple[list[np.ndarray], str]:
    """Outputs of the source model over the dataset, run by Slimline's own runtime."""
    from slimline.core.runtime import open_session

    session = open_session(handle, threads=0)
    return run_batches(session.run, dataset, cancel), session.provider


def run_batches(runner: Runner, dataset: Any, cancel: Any = None) -> list[np.ndarray]:
    parts: list[list[np.ndarray]] = []
    for feeds, _ in dataset.batches(BATCH):
        if cancel is not None:
            cancel.raise_if_cancelled()
        parts.append([np.asarray(o) for o in runner(feeds)])
    return [np.concatenate([p[i] for p in parts], axis=0) for i in range(len(parts[0]))]


def ort_runner(path: Path, input_specs: list[Any]) -> Runner:
    """Run an ONNX file with onnxruntime (CPU), casting feeds to the file's input types."""
    from slimline.core.runtime import ort_inference_session, ort_numpy_dtype

    sess = ort_inference_session(path)
    types = {i.name: ort_numpy_dtype(i.type) for i in sess.get_inputs()}
    kv = _kv_layout(path)
    hidden = set(kv.filled_inputs) if kv is not None else set()
    names = [i.name for i in sess.get_inputs() if i.name not in hidden]
    outs = [o.name for o in sess.get_outputs() if kv is None or o.name not in kv.present_outputs]
    by_pos = [s.name for s in input_specs]

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if all(n in feeds for n in names):
            f = {n: np.ascontiguousarray(feeds[n], dtype=types[n]) for n in names}
        else:  # exporter renamed inputs: feed by position
            f = {n: np.ascontiguousarray(feeds[s], dtype=types[n]) for n, s in zip(names, by_pos)}
        if kv is not None:  # a KV-cache decoder: one full pass with an empty past
            from slimline.core.lm.genai import full_sequence_feeds

            f = full_sequence_feeds(f, sess.get_inputs(), kv.head_size, kv.sliding_window)
        return sess.run(outs, f)

    return run


def _kv_layout(path: Path) -> Any:
    """The KV-cache layout of an ONNX decoder (run with an empty past), or None."""
    from slimline.core.lm.genai import kv_cache_layout
    from slimline.core.models.onnx_files import parse_onnx

    return kv_cache_layout(parse_onnx(path), path)


def torch_runner(module: Any, input_names: list[str], *, by_keyword: bool = False,
                 output_names: list[str] | None = None) -> Runner:
    """Run a torch module (TorchScript, .pt2 module, eager) on numpy feeds."""
    import torch

    from slimline.core.runtime import _to_numpy_list

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        tensors = {n: torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in input_names}
        with torch.inference_mode():
            out = module(**tensors) if by_keyword else module(*[tensors[n] for n in input_names])
        return _to_numpy_list(out, list(output_names or []))

    return run


def compare(reference: list[np.ndarray], got: list[np.ndarray], *, precision: str,
            identical: bool = False) -> Parity:
    """Max abs error over every output; cosine and top-1 agreement on the first output, per row."""
    from slimline.core.fidelity import max_abs_error
    from slimline.core.metrics import fidelity

    if len(got) < len(reference):
        raise ParityError(f"the exported model returns {len(got)} output(s), the source {len(reference)}",
                          subject="parity", hint="check the model's outputs; report the model if it persists")
    max_abs = 0.0
    scale = 1.0
    for r, g in zip(reference, got):
        if r.shape != g.shape:
            raise ParityError(f"output shape {list(g.shape)} differs from the source's {list(r.shape)}",
                              subject="parity", hint="the export changed the model's output layout")
        if r.size:
            max_abs = max(max_abs, max_abs_error(r, g))
            scale = max(scale, float(np.max(np.abs(r.astype(np.float64)))))
    fid = fidelity(reference[0], got[0])
    tol = TOLERANCES["copy"] if identical else TOLERANCES.get(precision, TOLERANCES["other"])
    allowed = tol.max_abs_rel * scale
    failures = []
    if not np.isfinite(max_abs) or max_abs > allowed:
        failures.append(f"max abs error {max_abs:.3g} > allowed {allowed:.3g}")
    if fid.mean_cosine < tol.min_cosine:
        failures.append(f"mean cosine {fid.mean_cosine:.6f} < {tol.min_cosine}")
    classify = reference[0].ndim >= 2 and reference[0].shape[-1] > 1
    top1 = fid.top1_agreement if classify else None
    if top1 is not None and top1 < tol.min_top1:
        failures.append(f"top-1 agreement {top1:.4f} < {tol.min_top1}")
    return Parity(runtime="", precision=precision, n=fid.n, max_abs_error=max_abs, max_abs_allowed=allowed,
                  mean_cosine=fid.mean_cosine, min_cosine=fid.min_cosine, top1_agreement=top1,
                  tolerance=tol, passed=not failures, failures=failures)


def check_outputs(reference: list[np.ndarray], runner: Runner, dataset: Any, *, precision: str,
                  runtime: str, source_runtime: str, cancel: Any = None, identical: bool = False) -> Parity:
    """Run the exported model, compare, and raise ParityError when outside the tolerance."""
    got = run_batches(runner, dataset, cancel)
    parity = compare(reference, got, precision=precision, identical=identical)
    parity.runtime, parity.source_runtime = runtime, source_runtime
    parity.input_kind = "random" if getattr(dataset, "kind", "real") == "random" else "dataset"
    parity.dataset = getattr(dataset, "name", "")
    if not parity.passed:
        kind = "copy" if identical else precision
        raise ParityError(f"parity check failed ({kind} tolerance): {'; '.join(parity.failures)}",
                          subject="export", hint="the file was not written; try another format or exporter, "
                                                 "or report the model")
    return parity


def check_weights(expected: dict[str, np.ndarray], got: dict[str, np.ndarray], precision: str) -> Parity:
    """Weights-only parity (ONNX initializers → safetensors): every tensor must round-trip exactly."""
    missing = sorted(set(expected) - set(got))
    failures = [f"{len(missing)} tensor(s) missing, e.g. {missing[:3]}"] if missing else []
    max_abs = 0.0
    for name, arr in expected.items():
        if name not in got:
            continue
        b = got[name]
        if b.shape != arr.shape or b.dtype != arr.dtype:
            failures.append(f"{name}: {b.dtype}{list(b.shape)} ≠ {arr.dtype}{list(arr.shape)}")
            continue
        if arr.size:
            diff = np.abs(arr.astype(np.float64) - b.astype(np.float64))
            max_abs = max(max_abs, float(np.nanmax(diff)) if np.isfinite(diff).any() else 0.0)
    if max_abs != 0.0:
        failures.append(f"values differ by up to {max_abs:.3g} (must be bit-exact)")
    parity = Parity(kind="weights", runtime="safetensors", source_runtime="onnx", precision=precision,
                    n=len(expected), input_kind="weights", dataset="", max_abs_error=max_abs, max_abs_allowed=0.0,
                    passed=not failures, failures=failures)
    if failures:
        raise ParityError("weights read back differ: " + "; ".join(failures[:3]), subject="export",
                          hint="the file was not written; report the model")
    return parity
