"""NVIDIA Triton Inference Server model repository for an ONNX model.

Layout: ``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/1/model.onnx``.
Inputs/outputs, dtypes and dims are read from the ONNX graph itself (not from
what Slimline guessed): dynamic dims become -1; when every input and output has a
dynamic first dim, that dim is the batch and is expressed with max_batch_size.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from slimline.core.export.records import ExportError

TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16",
                6: "TYPE_INT32", 7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16",
                11: "TYPE_FP64", 12: "TYPE_UINT32", 13: "TYPE_UINT64", 16: "TYPE_BF16"}


def triton_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "model"


def _io(values: Any, subject: str) -> list[dict[str, Any]]:
    out = []
    for v in values:
        tt = v.type.tensor_type
        if tt.elem_type not in TRITON_TYPES:
            raise ExportError(f"{v.name}: ONNX element type {tt.elem_type} has no Triton equivalent",
                              subject=subject, hint="Triton cannot serve this tensor type; skip --triton")
        if not tt.HasField("shape"):
            raise ExportError(f"{v.name}: the ONNX graph does not declare its shape", subject=subject,
                              hint="run onnx shape inference on the model, or skip --triton")
        dims = [int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tt.shape.dim]
        out.append({"name": v.name, "data_type": TRITON_TYPES[tt.elem_type], "dims": dims})
    return out


def triton_io(model_path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) of the ONNX graph with Triton dtypes and full dims (-1 = dynamic)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    graph_inputs = [v for v in model.graph.input if v.name not in inits]
    return _io(graph_inputs, str(model_path)), _io(model.graph.output, str(model_path))


def config_text(name: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]],
                max_batch_size: int) -> tuple[str, int]:
    """config.pbtxt text and the max_batch_size used (0 when the first dim is not a shared batch dim)."""
    batched = max_batch_size > 0 and all(t["dims"] and t["dims"][0] == -1 for t in inputs + outputs)
    mbs = max_batch_size if batched else 0

    def block(kind: str, items: list[dict[str, Any]]) -> str:
        parts = []
        for t in items:
            dims = t["dims"][1:] if batched else t["dims"]
            parts.append("  {\n"
                         f"    name: \"{t['name']}\"\n"
                         f"    data_type: {t['data_type']}\n"
                         f"    dims: [ {', '.join(str(d) for d in dims)} ]\n"
                         "  }")
        return f"{kind} [\n" + ",\n".join(parts) + "\n]\n"

    text = (f"name: \"{name}\"\n"
            "platform: \"onnxruntime_onnx\"\n"
            f"max_batch_size: {mbs}\n"
            + block("input", inputs) + block("output", outputs))
    if batched:
        text += "dynamic_batching { }\n"
    return text, mbs


def write_triton_repo(model_path: str | Path, repo_dir: str | Path, name: str, *,
                      max_batch_size: int = 64) -> Path:
    """Write ``repo_dir/<name>/`` (config + version 1). External data files are copied along."""
    model_path = Path(model_path)
    name = triton_name(name)
    inputs, outputs = triton_io(model_path)
    text, _ = config_text(name, inputs, outputs, max_batch_size)
    model_dir = Path(repo_dir) / name
    version = model_dir / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path, version / "model.onnx")
    for data in external_files(model_path):  # keep their names: the graph refers to them by name
        shutil.copyfile(data, version / data.name)
    from slimline.core.lm.genai import GENAI_CONFIG, companion_paths, copy_companions

    if companion_paths(model_path):  # an LM's genai folder: config + tokenizer for clients (and the generate API)
        copy_companions(model_path, version, onnx_name="model.onnx")
        (model_dir / "README.md").write_text(LM_NOTE.format(config=GENAI_CONFIG), encoding="utf-8")
    (model_dir / "config.pbtxt").write_text(text, encoding="utf-8")
    return model_dir


LM_NOTE = """This is a decoder with a KV cache. Triton's onnxruntime backend runs one forward pass per request:
the client feeds input_ids, attention_mask (past + new tokens) and every past_key_values.* tensor
(sequence length 0 on the first call) and gets logits plus the present.* tensors to feed back.
1/ also holds {config} and the tokenizer, so the same folder runs with onnxruntime-genai
(`onnxruntime_genai.Model("1")`), which manages the cache itself.
"""


def external_files(model_path: Path) -> list[Path]:
    """The external data files an ONNX file's tensors point at (the builder names it ``model.onnx.data``)."""
    from slimline.core.models.onnx_files import check_external_data, parse_onnx

    return check_external_data(parse_onnx(model_path), model_path)
