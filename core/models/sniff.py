"""Content sniffing (magic bytes, zip member names, headers), not by extension.

This gives the raw "kind" of a path; the table of formats (:mod:`slimline.core.models.formats`)
turns a kind into a format name. Extensions lie (``.bin`` may be a torch zip, ``.pt`` a legacy
pickle, a renamed text file may end in ``.onnx``), so we look at the bytes and only use the
extension to phrase a better error message. Nothing here imports torch or onnx.
"""
from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from slimline.core.errors import ModelLoadError

MODEL_EXTENSIONS = (".onnx", ".pt", ".pth", ".pt2", ".safetensors", ".bin", ".ts", ".ckpt", ".jit", ".gguf")
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024

# Formats we recognise but cannot open, with the advice to give.
_UNSUPPORTED_MAGIC: list[tuple[int, bytes, str, str]] = [
    (0, b"\x89HDF\r\n\x1a\n", "a Keras/HDF5 (.h5) file",
     "convert it to ONNX first (e.g. with tf2onnx) and open the .onnx file"),
    (4, b"TFL3", "a TensorFlow Lite flatbuffer",
     "convert it to ONNX first (e.g. with tf2onnx) and open the .onnx file"),
    (0, b"\x93NUMPY", "a NumPy array file, not a model",
     "open a model file; datasets (.npz/.npy) go in the data panel"),
]


def _fail(path: Path, problem: str, hint: str) -> ModelLoadError:
    return ModelLoadError(problem, hint=hint, subject=str(path))


def _supported_hint() -> str:
    return ("Slimline opens ONNX (.onnx), TorchScript (.pt/.ts), torch.export (.pt2), PyTorch checkpoints "
            "(.pt/.pth/.bin), safetensors files, GGUF (.gguf), Slimline archives and Hugging Face folders "
            "(config.json + weights)")


def zip_kind(path: Path) -> str | None:
    """Classify a torch zip archive by its member names: torchscript, torch_export, torch_save."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None
    if any(n.endswith("/archive_format") or n == "archive_format" for n in names) or any(
            "/models/" in n and n.endswith(".json") for n in names):
        return "torch_export"
    has_code = any("/code/" in n or n.startswith("code/") for n in names)
    if has_code and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return "torch_save"
    return "zip"


def is_safetensors(head: bytes, size: int) -> bool:
    """safetensors: u64 little-endian header length, then a JSON object."""
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= min(size - 8, _SAFETENSORS_MAX_HEADER) and head[8:9] == b"{"


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c >= 9 for c in head[:256])


def sniff_file(path: Path) -> str:
    """Format of a single file: onnx | torchscript | torch_export | torch_save | pickle | safetensors | gguf.

    ``torch_save`` and ``pickle`` are refined to state_dict / pickle_module when opened,
    because telling them apart needs the (restricted) unpickler.
    """
    size = path.stat().st_size
    if size == 0:
        raise _fail(path, "the file is empty (0 bytes)",
                    "the download or copy was probably interrupted; get the file again")
    with path.open("rb") as fh:
        head = fh.read(4096)
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        kind = zip_kind(path)
        if kind is None:
            raise _fail(path, "the file looks like a zip archive but it is truncated or corrupt",
                        "get the file again; PyTorch .pt/.pt2 files are zip archives and must be complete")
        if kind == "zip":
            raise _fail(path, "a zip archive that is not a PyTorch, TorchScript or torch.export file",
                        "unpack it and open the model file or folder inside")
        return kind
    if head[:4] == b"GGUF":
        return "gguf"     # llama.cpp: dequantized through transformers when opened
    for offset, magic, what, hint in _UNSUPPORTED_MAGIC:
        if head[offset:offset + len(magic)] == magic:
            raise _fail(path, f"{what} is not supported", hint)
    if is_safetensors(head, size):
        return "safetensors"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        return "pickle"   # legacy torch.save or plain pickle
    if head[:1] == b"\x08" and path.suffix.lower() not in (".txt", ".json", ".csv"):
        return "onnx"     # ModelProto field 1 (ir_version) is serialised first
    if path.suffix.lower() == ".onnx" and not _looks_like_text(head):
        return "onnx"     # unusual field order: let the protobuf parser decide
    if _looks_like_text(head):
        raise _fail(path, "this is a text file, not a model", _supported_hint())
    ext = path.suffix.lower()
    if ext in MODEL_EXTENSIONS:
        raise _fail(path, f"the content is not a valid {ext} model (unrecognised header bytes "
                    f"{head[:8].hex(' ')}); the file is corrupt or not what its name says",
                    "get the file again or re-export the model")
    raise _fail(path, f"unsupported file type{f' {ext!r}' if ext else ''} (unrecognised content)",
                _supported_hint())


def hf_weight_files(folder: Path) -> list[Path]:
    """Weight files of a Hugging Face folder (safetensors preferred, sharded indexes followed)."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text("utf-8"))["weight_map"]
            except (ValueError, KeyError, TypeError) as exc:
                raise _fail(index, f"the shard index is unreadable ({exc})",
                            "get the index file again or re-save the model with save_pretrained") from None
            shards = sorted({str(v) for v in weight_map.values()})
            files = []
            for s in shards:
                p = (folder / s)
                if Path(s).is_absolute() or ".." in Path(s).parts or not p.is_file():
                    raise _fail(index, f"shard {s!r} listed in the index is missing or outside the folder",
                                "copy all shard files next to the index")
                files.append(p)
            return files
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name]
    return []


def sniff_path(p: Path) -> str:
    """Raw kind of an existing path: ``hf_folder`` or a :func:`sniff_file` kind; clear errors otherwise."""
    if not p.exists():
        raise _fail(p, "no such file or folder", "check the path; it may have been moved or deleted")
    if p.is_dir():
        entries = [e for e in p.iterdir() if not e.name.startswith(".")]
        if not entries:
            raise _fail(p, "the folder is empty",
                        "open a model file, or a Hugging Face folder with config.json and weights")
        if not (p / "config.json").is_file():
            models = sorted(e.name for e in entries if e.suffix.lower() in MODEL_EXTENSIONS)[:5]
            hint = (f"open the model file inside instead: {', '.join(models)}" if models else
                    "a Hugging Face folder needs config.json plus model.safetensors (or a sharded index)")
            raise _fail(p, "this folder has no config.json, so it is not a Hugging Face model folder", hint)
        if not hf_weight_files(p):
            raise _fail(p, "config.json found but no weights "
                        "(model.safetensors, pytorch_model.bin or a shard index)",
                        "save the model with save_pretrained() so the weights sit next to config.json")
        return "hf_folder"
    if not p.is_file():
        raise _fail(p, "not a regular file", "open a model file or a Hugging Face folder")
    return sniff_file(p)
