"""GGUF files (llama.cpp): dequantized once through transformers into a cached float32 Hugging Face folder.

Everything downstream (layer table, running, ONNX export, the genai builder, text windows) works
on HF folders, so a GGUF is turned into one: transformers' GGUF loader dequantizes every tensor,
the model is rebuilt from its config and state_dict (the loaded one carries a quantization config
and will not ``save_pretrained``, DESIGN §11) and saved as float32 safetensors with the tokenizer the
GGUF holds. The folder is cached by the GGUF's sha256 under the workspace's cache
(``<workspace>/cache/gguf/<file stem>-<hash>``), built in a temp folder and renamed into place, so a second
open is instant and a crash leaves nothing half-written. The handle is the HF folder's, with a note
that says the weights were already quantized and which GGUF types they came from: a model
dequantized from 4-bit blocks sits on a 4-bit grid, which flatters 4-bit quantizers.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from slimline.core.errors import ModelLoadError
from slimline.core.handle import ModelHandle
from slimline.core.models import memory
from slimline.core.models.hf import SOURCE_FILE, open_hf, transformers_available
from slimline.core.models.tensors import file_key

CACHE_ENV = "SLIMLINE_GGUF_CACHE"   # overrides <workspace>/cache/gguf
_FLOAT_TYPES = ("F32", "F16")       # gguf.quants.dequantize handles these itself, besides its quant classes
_TMP_PREFIX = ".tmp-"
Progress = Callable[[float, str], None]


def _no_progress(fraction: float, message: str) -> None:
    del fraction, message


class GGUFInfo(BaseModel):
    """What a GGUF file holds, read from its header without dequantizing anything."""

    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str
    architecture: str
    name: str = ""
    tensor_types: dict[str, int]   # GGML type name -> number of tensors, most tensors first
    tensors: int
    params: int
    blocks: int | None = None      # <arch>.block_count: decoder blocks

    def types_text(self) -> str:
        """'Q4_1 (210 tensors), F32 (61), Q8_0 (1)'."""
        items = list(self.tensor_types.items())
        return ", ".join(f"{t} ({n} tensor{'s' if n != 1 else ''})" if i == 0 else f"{t} ({n})"
                         for i, (t, n) in enumerate(items))

    def note(self) -> str:
        quant = [t for t in self.tensor_types if t not in ("F32", "F16", "BF16", "F64")]
        already = (f"the weights were already quantized ({', '.join(quant)}): they sit on that grid, so "
                   "quantizers of the same bit width can nearly re-create them — judge them on a float-trained "
                   "model as well") if quant else "the file held float weights only"
        return (f"dequantized from GGUF {Path(self.path).name}; the file held types {self.types_text()}; "
                f"{already}")


# --------------------------------------------------------------------------- reading the header

def file_sha256(path: Path) -> str:
    """Content hash of the GGUF (the cache key), computed once per file identity in this process."""
    key = file_key(path, "sha256")
    if key not in _SHA:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _SHA[key] = h.hexdigest()
    return _SHA[key]


_SHA: dict[tuple, str] = {}   # own cache: the weight-source LRU holds only 4 entries


def _corrupt(path: Path, exc: BaseException) -> ModelLoadError:
    first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
    return ModelLoadError(f"the GGUF file is corrupt or truncated, its header cannot be read ({first})",
                          subject=str(path),
                          hint="get the file again (a download may have stopped early) or re-convert the model "
                               "with llama.cpp's convert_hf_to_gguf.py")


def read_gguf_info(path: Path) -> GGUFInfo:
    """Header facts of a GGUF file (architecture, tensor types, parameter count); ModelLoadError if unreadable."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ModelLoadError("opening GGUF files needs the 'gguf' package", subject=str(path),
                             hint="pip install 'slimline[llm]'") from None
    try:
        reader = GGUFReader(str(path))
        arch = _field_text(reader, "general.architecture")
        name = _field_text(reader, "general.name")
        counts: dict[str, int] = {}
        params = 0
        for t in reader.tensors:
            counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
            params += int(t.n_elements)
        blocks = _field_int(reader, f"{arch}.block_count") if arch else None
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is a damaged file to the user
        raise _corrupt(path, exc) from None
    if not arch:
        raise ModelLoadError("the GGUF file names no architecture (general.architecture is missing)",
                             subject=str(path), hint="re-convert the model with llama.cpp's convert_hf_to_gguf.py")
    ordered = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return GGUFInfo(path=str(path), sha256=file_sha256(path), architecture=arch, name=name,
                    tensor_types=ordered, tensors=sum(counts.values()), params=params, blocks=blocks)


def _field_text(reader: Any, key: str) -> str:
    field = reader.fields.get(key)
    if field is None or not field.data:
        return ""
    return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")


def _field_int(reader: Any, key: str) -> int | None:
    field = reader.fields.get(key)
    if field is None or not field.data:
        return None
    return int(field.parts[field.data[0]][0])


# --------------------------------------------------------------------------- what transformers can load

def dequantizable_types() -> set[str]:
    """GGML tensor types the installed gguf package can turn back into floats (what transformers calls)."""
    from gguf.quants import _type_traits

    return {*_FLOAT_TYPES, *(t.name for t in _type_traits)}


def supported_architectures() -> list[str]:
    """GGUF architectures transformers' loader maps onto a model class."""
    try:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    except ImportError:
        return []
    return [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]


def _normalized_arch(arch: str) -> str:
    """The name transformers uses for a llama.cpp architecture (qwen2moe -> qwen2_moe, ...)."""
    special = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss", "t5encoder": "t5",
               "minimax-m2": "minimax_m2"}
    return special.get(arch, arch)


def check_loadable(info: GGUFInfo) -> None:
    """Refuse, before any work, a GGUF whose types or architecture transformers cannot load."""
    path = info.path
    if not transformers_available():
        raise ModelLoadError("opening a GGUF needs the 'transformers' package (it dequantizes the file)",
                             subject=path, hint="pip install 'slimline[llm]'")
    bad = {t: n for t, n in info.tensor_types.items() if t not in dequantizable_types()}
    if bad:
        listed = ", ".join(f"{t} ({n} tensor{'s' if n != 1 else ''})" for t, n in bad.items())
        raise ModelLoadError(
            f"the GGUF holds tensor types that cannot be dequantized: {listed}",
            subject=path,
            hint="re-convert or re-quantize it with llama.cpp to a common type (F16, Q8_0, Q4_K_M), "
                 "or open the original Hugging Face folder")
    archs = supported_architectures()
    if _normalized_arch(info.architecture) not in archs and info.architecture not in archs:
        raise ModelLoadError(
            f"GGUF architecture {info.architecture!r} is not supported by the installed transformers' "
            f"GGUF loader (it reads: {', '.join(sorted(archs))})",
            subject=path,
            hint="open the original Hugging Face folder of this model instead, or update transformers")


# --------------------------------------------------------------------------- the cached float folder

def cache_root() -> Path:
    """Where dequantized folders live: $SLIMLINE_GGUF_CACHE or ``<workspace>/cache/gguf``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from slimline.core.history import default_workspace

    return default_workspace() / "cache" / "gguf"


def folder_name(path: Path, sha256: str) -> str:
    """'<file stem>-<16 hex of the sha256>': readable where the window shows it, keyed by content."""
    stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in path.stem)[:80] or "model"
    return f"{stem}-{sha256[:16]}"


def find_cached(sha256: str, root: Path | None = None) -> Path | None:
    """A complete dequantized folder for this content, whatever the GGUF was called when it was built."""
    base = root or cache_root()
    if not base.is_dir():
        return None
    for d in sorted(base.glob(f"*-{sha256[:16]}")):
        if not d.name.startswith(_TMP_PREFIX) and _is_complete(d):
            return d
    return None


def _is_complete(folder: Path) -> bool:
    return (folder / SOURCE_FILE).is_file() and (folder / "config.json").is_file() and any(
        folder.glob("model*.safetensors"))


def dequantize_to_folder(path: Path, info: GGUFInfo, root: Path | None = None,
                         progress: Progress | None = None, cancel: Any = None) -> Path:
    """The cached float32 HF folder for this GGUF, built now if missing (temp folder, then rename)."""
    found = find_cached(info.sha256, root)
    if found is not None:
        return found
    final = (root or cache_root()) / folder_name(path, info.sha256)
    est = memory.estimate({}, info.params, dtype="float32", copies=2)
    memory.require_fits(est, subject=str(path), doing="dequantizing this GGUF")
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.parent / f"{_TMP_PREFIX}{final.name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        _build(path, info, work, progress or _no_progress, cancel)
        try:
            os.replace(work, final)
        except OSError:
            if not _is_complete(final):  # another process finished first: keep theirs
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _load_error(path: Path, info: GGUFInfo, exc: BaseException) -> ModelLoadError:
    first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
    if isinstance(exc, ImportError):
        return ModelLoadError(f"dequantizing a GGUF needs a package that is not installed ({first})",
                              subject=str(path), hint="pip install 'slimline[llm]' (transformers, gguf, accelerate)")
    if "not supported" in first and "architecture" in first:
        return ModelLoadError(f"GGUF architecture {info.architecture!r} is not supported by transformers' "
                              "GGUF loader", subject=str(path),
                              hint="open the original Hugging Face folder of this model instead")
    if "Dequantization" in first or "not yet implemented" in first:
        return ModelLoadError(f"a tensor type in this GGUF cannot be dequantized ({first})", subject=str(path),
                              hint="re-quantize it with llama.cpp to F16, Q8_0 or Q4_K_M")
    return ModelLoadError(f"transformers could not load the GGUF as a causal LM ({first})", subject=str(path),
                          hint="the file may be corrupt, or an architecture without a causal-LM class "
                               "(encoder-only models); open the original Hugging Face folder instead")


def _build(path: Path, info: GGUFInfo, out: Path, progress: Progress, cancel: Any = None) -> None:
    """Dequantize with transformers, rebuild without the quantization config, save model + tokenizer.

    ``progress`` gets the phases (transformers dequantizes in one call, so there are no finer steps);
    ``cancel`` is checked between them.
    """
    def phase(fraction: float, message: str) -> None:
        if cancel is not None:
            cancel.raise_if_cancelled()
        progress(fraction, message)

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()   # the loader logs every ignored GGUF key
    t0 = time.perf_counter()
    try:
        phase(0.05, f"dequantizing {info.tensors} GGUF tensors ({info.types_text()}) to float32")
        try:
            loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                          dtype=torch.float32, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - whatever the loader raises, the user gets one clear line
            raise _load_error(path, info, exc) from None
        phase(0.6, "rebuilding the model without its quantization config")
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        state = loaded.state_dict()
        with torch.device("meta"):
            fresh = AutoModelForCausalLM.from_config(config)
        fresh.load_state_dict(state, assign=True, strict=False)
        fresh.tie_weights()
        missing = [n for n, p in fresh.named_parameters() if p.is_meta]
        if missing:
            raise ModelLoadError(f"the GGUF has no values for {len(missing)} weights of the "
                                 f"{type(fresh).__name__} (first: {missing[0]})", subject=str(path),
                                 hint="the file is incomplete or from a converter this transformers does not "
                                      "match; re-convert it or open the original Hugging Face folder")
        phase(0.7, f"writing float32 safetensors ({info.params * 4 / 2**20:.0f} MiB)")
        fresh.save_pretrained(str(out), safe_serialization=True)
        del fresh, loaded, state
        tokenizer_note = ""
        phase(0.9, "converting the GGUF's tokenizer")
        try:
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
            tok.save_pretrained(str(out))
        except Exception as exc:  # noqa: BLE001 - the model still opens; text data will say what is missing
            tokenizer_note = f"the GGUF's tokenizer could not be converted ({type(exc).__name__})"
    finally:
        transformers.logging.set_verbosity(verbosity)
    for f in out.iterdir():
        if f.is_file():
            os.chmod(f, 0o644)
    notes = [info.note()] + ([tokenizer_note] if tokenizer_note else [])
    record = {"kind": "gguf", "notes": notes, "gguf": info.model_dump(),
              "seconds": round(time.perf_counter() - t0, 1)}
    (out / SOURCE_FILE).write_text(json.dumps(record, indent=1), "utf-8")


# --------------------------------------------------------------------------- as a job (the window)

def cached_folder(path: str | Path) -> str | None:
    """The dequantized folder of this GGUF when it is already built (hashes the file: run off the UI thread)."""
    found = find_cached(file_sha256(Path(path)))
    return str(found) if found is not None else None


def dequantize_task(spec: dict[str, Any], emit: Any, cancel: Any) -> dict[str, Any]:
    """Job body (``slimline.core.jobs.start_task_job``): build the float folder of ``spec["path"]``.

    Why a child process: transformers' GGUF loader dequantizes in numpy, which holds the GIL for
    hundreds of milliseconds at a time; in a thread of the window it froze the UI that long.
    """
    path = Path(spec["path"])

    def progress(fraction: float, message: str) -> None:
        emit({"type": "progress", "overall": float(fraction), "step_id": "", "fraction": float(fraction),
              "message": str(message)})

    progress(0.0, "reading the GGUF header")
    found = find_cached(file_sha256(path))
    if found is None:
        info = read_gguf_info(path)
        check_loadable(info)
        cancel.raise_if_cancelled()
        found = dequantize_to_folder(path, info, progress=progress, cancel=cancel)
    return {"folder": str(found)}


def remove_partial_builds(pid: int, root: Path | None = None) -> None:
    """What a dequantizing process ``pid`` left when it was terminated (its temp folder)."""
    base = root or cache_root()
    for d in base.glob(f"{_TMP_PREFIX}*-{pid}"):
        shutil.rmtree(d, ignore_errors=True)


DEQUANTIZE_TASK = "slimline.core.models.gguf:dequantize_task"


# --------------------------------------------------------------------------- format table entry

def gguf_open(path: Path, trust: bool) -> ModelHandle:
    """Open a GGUF as its dequantized HF folder (built on first open); the handle notes the GGUF's types."""
    del trust  # GGUF holds no code; the dequantized folder is safetensors
    folder = find_cached(file_sha256(path))
    if folder is None:  # first open: read the header, refuse early, dequantize
        info = read_gguf_info(path)
        check_loadable(info)
        folder = dequantize_to_folder(path, info)
    handle = open_hf(folder)
    return handle.model_copy(update={"meta": {**handle.meta, "gguf_file": str(path)}})
