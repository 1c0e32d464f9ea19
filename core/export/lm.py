"""Language-model exports: onnxruntime-genai folders (KV cache; fp32, fp16, int4) and a plain logits ONNX.

A genai folder is what an LM deploys as: ``model.onnx`` (+ ``.data``), ``genai_config.json``,
the tokenizer, and here a ``chat.py`` + README that run it offline. It is built by the model
builder from a torch variant, or — when the variant already is such a folder (after weight-only
quantization, which keeps the companions) — copied as it is, never rebuilt. Every export is
checked against its source the way LMs are: logits on token windows and greedy tokens
(:mod:`slimline.core.lm.parity`), then ``chat.py`` itself is run once and must print the
verified tokens. Everything is written into the caller's staging folder.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slimline.core.export.records import LM_FORMATS, ExportError, ExportRecord, Parity, ParityError, file_entry
from slimline.core.handle import ModelHandle

PRECISION = {"onnx-genai": "fp32", "onnx-genai-fp16": "fp16", "onnx-genai-int4": "int4"}
SUFFIX = {"onnx-genai": "-genai", "onnx-genai-fp16": "-genai-fp16", "onnx-genai-int4": "-genai-int4",
          "onnx-logits": "-logits"}
CHAT_CHECK_TOKENS = 8
SAMPLE = "The quick brown fox jumps over the lazy dog. It returns the value of the function."
Progress = Callable[[float, str], None]


def is_lm_format(fmt: str) -> bool:
    return fmt in LM_FORMATS


def lm_kind(handle: ModelHandle) -> str:
    """"torch" (a causal LM to build from), "genai" (a genai folder's ONNX), "kv" (a KV-cache ONNX alone), or ""."""
    from slimline.core.lm.convert import causal_lm_config, is_kv_decoder

    if handle.family == "torch":
        try:
            return "torch" if causal_lm_config(handle) is not None else ""
        except Exception:  # noqa: BLE001 - an unreadable config is simply not an LM here
            return ""
    if is_kv_decoder(handle):
        return "genai" if handle.meta["kv_cache"].get("genai_folder") else "kv"
    return ""


def folder_name(fmt: str, name: str) -> str:
    return name + SUFFIX[fmt]


def check_lm_fits(handle: ModelHandle, fmt: str) -> None:
    """Refuse LM formats for models they cannot come from, before anything is computed."""
    kind = lm_kind(handle)
    if not kind:
        raise ExportError(f"{fmt} is for causal language models; this model is not one "
                          f"({handle.family}, {handle.format})", subject=handle.path,
                          hint="export it as onnx, or pick the LM's step of the run with --step")
    if kind == "kv":
        raise ExportError("this KV-cache ONNX has no genai_config.json beside it, so it is not a complete "
                          "onnxruntime-genai model", subject=handle.path,
                          hint="export it as onnx, or export the torch step before it as onnx-genai")
    if kind == "genai" and fmt != "onnx-genai":
        what = ("a logits-only ONNX cannot be made from a KV-cache ONNX" if fmt == "onnx-logits"
                else "its precision is fixed: the model builder needs the torch model")
        raise ExportError(f"this variant is already an onnxruntime-genai folder: {what}", subject=handle.path,
                          hint="export it with --format onnx-genai (its folder is copied as it is), or export the "
                               f"torch step before it as {fmt}")
    if kind == "torch" and fmt != "onnx-logits":
        from slimline.core.lm.genai import genai_available

        if not genai_available():
            raise ExportError("the onnxruntime-genai model builder is not installed", subject=handle.path,
                              hint="pip install 'slimline[llm]', or export as onnx-logits")


def _report(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(fraction, message)


def write_lm(handle: ModelHandle, fmt: str, dest: Path, folder: str, *, name: str, data: Any = None,
             cancel: Any = None, progress: Progress | None = None, threads: int = 0,
             extra_files: bool = True, context_length: int = 0) -> ExportRecord:
    """Write ``fmt`` of ``handle`` into ``dest/folder`` ("" = ``dest`` itself, a bundle) and verify it.

    ``extra_files``: add chat.py, README.md and requirements.txt (genai formats).
    ``context_length``: a model-builder export serves at most that many positions (0: the model's own).
    Raises ExportError / ParityError; the caller's staging folder is then removed.
    """
    from slimline.core.lm.convert import tokenizer_folder

    check_lm_fits(handle, fmt)
    kind = lm_kind(handle)
    if context_length and (kind == "genai" or fmt == "onnx-logits"):
        raise ExportError(f"a context length applies to exports the model builder makes, not to "
                          f"{'a copied onnxruntime-genai folder' if kind == 'genai' else 'onnx-logits'}",
                          subject="--context-length", hint="leave it out, or export the float model (a run's "
                          "Original, or the model file) as onnx-genai / onnx-genai-int4")
    target = dest / folder if folder else dest
    target.mkdir(parents=True, exist_ok=True)
    tok_dir = tokenizer_folder(handle.path, (handle.meta or {}).get("genai_folder"))
    notes: list[str] = []
    _report(progress, 0.05, "loading the source model")
    source, source_rt, cfg = _source(handle, kind)
    if cancel is not None:
        cancel.raise_if_cancelled()
    t0 = time.perf_counter()
    if kind == "genai":
        _report(progress, 0.2, "copying the onnxruntime-genai folder")
        onnx_path = _copy_genai(handle, target)
        precision = "copy"
        notes.append("the variant's onnxruntime-genai folder, copied as it is (not rebuilt)")
    elif fmt == "onnx-logits":
        _report(progress, 0.2, "torch.onnx export of a logits-only wrapper")
        onnx_path = _write_logits(handle, target, cfg, tok_dir)
        precision = "fp32"
        notes.append(f"torch.onnx export (torch.export-based) of {_arch(cfg)} returning logits with use_cache=False, "
                     f"batch and sequence dynamic, in {time.perf_counter() - t0:.1f} s (no KV cache: for evaluation)")
    else:
        precision = PRECISION[fmt]
        _report(progress, 0.2, f"onnxruntime-genai model builder ({precision})")
        onnx_path = _build(handle, target, precision, tok_dir, cancel, context_length)
        notes.append(f"onnxruntime-genai model builder: {_arch(cfg)} → {precision} KV-cache ONNX in "
                     f"{time.perf_counter() - t0:.1f} s" + (" (the builder's default int4: RTN, block 32, "
                                                             "MatMulNBits)" if precision == "int4" else "")
                     + (f"; serves at most {context_length} tokens" if context_length else ""))
    if cancel is not None:
        cancel.raise_if_cancelled()
    _report(progress, 0.55, "checking the export against the source (logits on windows, greedy tokens)")
    parity = _verify(handle, onnx_path, source, source_rt, precision, data, tok_dir, cancel, threads)
    notes += parity.notes()
    genai = fmt != "onnx-logits"
    if genai and extra_files:
        _report(progress, 0.85, "writing chat.py and README.md; running chat.py once")
        shown = precision if precision != "copy" else _precision(onnx_path)
        notes += _write_extras(target, name=name, precision=shown, source=handle.path, tok_dir=tok_dir or target,
                               verified=parity.notes())
    files = [file_entry(p, dest) for p in sorted(target.rglob("*")) if p.is_file()]
    return ExportRecord(format=fmt, name=name, path=onnx_path.relative_to(dest).as_posix(), files=files,
                        bytes=sum(f.bytes for f in files), sha256=_sha(onnx_path), parity=_as_parity(parity),
                        source=_source_info(handle), external_data=any(f.path.endswith(".data") for f in files),
                        notes=notes)


# --------------------------------------------------------------------------- writing


def _arch(cfg: dict[str, Any] | None) -> str:
    from slimline.core.lm.convert import architecture

    return architecture(cfg) if cfg else "the model"


def _source(handle: ModelHandle, kind: str) -> tuple[Any, str, dict[str, Any] | None]:
    """(logits runner, what runs it, HF config) of the variant being exported."""
    from slimline.core.lm.parity import session_lm_runner, torch_lm_runner

    if kind == "torch":
        from slimline.core.lm.convert import causal_lm_config
        from slimline.core.models import load_eager_module

        module = load_eager_module(handle)
        return torch_lm_runner(module), "torch (eager, no cache)", causal_lm_config(handle)
    from slimline.core.runtime import open_session

    return session_lm_runner(open_session(handle, threads=0)), "onnxruntime (the variant's ONNX)", None


def _copy_genai(handle: ModelHandle, target: Path) -> Path:
    """The variant's ONNX, its weights file(s) and its companions, byte for byte."""
    from slimline.core.lm.genai import companion_paths

    src = Path(handle.path)
    for f in [*map(Path, handle.files or [handle.path]), *companion_paths(src)]:
        if f.is_file():
            shutil.copyfile(f, target / f.name)
    return target / src.name


def _write_logits(handle: ModelHandle, target: Path, cfg: dict[str, Any] | None, tok_dir: Path | None) -> Path:
    from slimline.core.lm.convert import copy_tokenizer, export_logits_onnx
    from slimline.core.models import load_eager_module
    from slimline.core.onnx_export import OnnxExportFailed

    path = target / "model.onnx"
    try:
        export_logits_onnx(load_eager_module(handle), path, vocab_size=int((cfg or {}).get("vocab_size") or 2))
    except OnnxExportFailed as exc:
        raise ExportError(exc.message, subject=handle.path, hint=exc.hint) from exc
    if tok_dir is not None:
        copy_tokenizer(tok_dir, target)
    return path


def _build(handle: ModelHandle, target: Path, precision: Any, tok_dir: Path | None, cancel: Any = None,
           context_length: int = 0) -> Path:
    """The model builder's folder, built beside ``target`` and moved into it."""
    from slimline.core.lm.convert import BuilderUnsupported, build_genai_folder, hf_folder_for
    from slimline.core.lm.genai import GenaiError, genai_onnx_name

    scratch = Path(tempfile.mkdtemp(prefix=".lm-build-", dir=target.parent))
    try:
        hf_dir = hf_folder_for(handle, scratch, [tok_dir])
        built = build_genai_folder(hf_dir, scratch / "genai", precision, cancel=cancel,
                                   context_length=context_length or None)
        for f in built.iterdir():
            shutil.move(str(f), target / f.name)
        return target / genai_onnx_name(target)
    except BuilderUnsupported as exc:
        raise ExportError(exc.message, subject=handle.path,
                          hint="export it as onnx-logits (no KV cache), or with --format onnx") from exc
    except GenaiError as exc:
        raise ExportError(exc.message, subject=handle.path, hint="export it as onnx-logits, or report the model") \
            from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _precision(onnx_path: Path) -> str:
    from slimline.core.export.parity import onnx_precision

    p = onnx_precision(onnx_path)
    return "int4/int8 weight-only" if p in ("int8", "mixed") and _has_nbits(onnx_path) else p


def _has_nbits(onnx_path: Path) -> bool:
    from slimline.core.models.onnx_files import parse_onnx

    return any(n.op_type == "MatMulNBits" for n in parse_onnx(onnx_path).graph.node)


def _sha(path: Path) -> str:
    from slimline.core.export.records import sha256_file

    return sha256_file(path)


def _source_info(handle: ModelHandle) -> dict[str, Any]:
    from slimline.core.export.records import model_sha256

    return {"path": handle.path, "format": handle.format, "family": handle.family,
            "sha256": model_sha256(handle.files, handle.path)}


# --------------------------------------------------------------------------- checking


def _verify(handle: ModelHandle, onnx_path: Path, source: Any, source_rt: str, precision: str, data: Any,
            tok_dir: Path | None, cancel: Any, threads: int) -> Any:
    from slimline.core.errors import SlimlineError
    from slimline.core.lm.convert import FP16_HINT
    from slimline.core.lm.genai import genai_folder_of, genai_generator
    from slimline.core.lm.parity import check_lm_parity, probe_limits, probe_set, quantized_kernels, session_lm_runner
    from slimline.core.models import open_model
    from slimline.core.runtime import open_session

    exported = open_model(onnx_path)
    vocab = int(exported.meta.get("vocab_size") or handle.meta.get("vocab_size") or 0) or _vocab_of(source)
    length, new_tokens = probe_limits((exported.meta or {}).get("kv_cache", {}).get("context_length"))
    try:
        probes = probe_set(_text_or_rows(data), tokenizer_dir=tok_dir, vocab_size=vocab, length=length)
        folder = genai_folder_of(onnx_path)
        generate = genai_generator(folder, threads) if folder is not None else None

        runtime = "onnxruntime" + (" + onnxruntime-genai generate" if folder is not None else "")
        parity = check_lm_parity(source, session_lm_runner(open_session(exported, threads=threads)), probes,
                                 precision=precision, runtime=runtime, source_runtime=source_rt,
                                 generate=generate, cancel=cancel,
                                 new_tokens=new_tokens,
                                 quantized=quantized_kernels(onnx_path))
    except ParityError:
        raise
    except SlimlineError as exc:
        hint = (FP16_HINT.format(fp32="--format onnx-genai (fp32)") if precision == "fp16"
                else exc.hint or "report the model")
        raise ExportError(f"the exported LM could not be checked: {exc.message}", subject=str(onnx_path),
                          hint=hint) from exc
    finally:
        from slimline.core.runtime import clear_session_cache

        clear_session_cache()  # the staging folder is about to move: no session may keep its files
    if not parity.passed:
        raise ParityError(f"parity check failed ({precision} LM tolerance): " + "; ".join(parity.failures),
                          subject="export", hint="the files were not written; try fp32, or another format, or "
                                                 "report the model")
    return parity


def _vocab_of(source: Any) -> int:
    import numpy as np

    return int(np.asarray(source(np.zeros((1, 2), dtype=np.int64))).shape[-1])


def _text_or_rows(data: Any) -> Any:
    """A text file path as is (cut into windows); another dataset path is not token data for an LM."""
    if isinstance(data, (str, Path)):
        p = Path(data)
        return p if p.suffix.lower() in (".txt", ".text") and p.is_file() else None
    return data


def _as_parity(lm: Any) -> Parity:
    """The LM check in the record's common shape (logits figures) plus its greedy part."""
    lg = lm.logits
    return Parity(kind="lm", runtime=lm.runtime, source_runtime=lm.source_runtime, precision=lm.precision,
                  n=lg.windows, input_kind="dataset" if lm.input_kind == "dataset" else "random",
                  dataset=lm.dataset, max_abs_error=lg.max_abs_error,
                  max_abs_allowed=lg.allowed_rel * max(lg.source_max_abs, 1e-12), mean_cosine=lg.mean_cosine,
                  top1_agreement=lg.top1_agreement, passed=lm.passed, failures=list(lm.failures),
                  greedy=lm.greedy)


# --------------------------------------------------------------------------- chat.py + README


def requirements() -> list[str]:
    from importlib.metadata import version

    return [f"onnxruntime-genai=={version('onnxruntime-genai')}"]


def _write_extras(target: Path, *, name: str, precision: str, source: str, tok_dir: Path,
                  verified: list[str]) -> list[str]:
    """chat.py, README.md, requirements.txt beside the model; chat.py is run once on a verified prompt."""
    from slimline.core import __version__
    from slimline.core.lm.chat_script import render_chat, render_readme

    bos, template = _tokenizer_facts(tok_dir)
    (target / "chat.py").write_text(render_chat(".", bos_id=bos, has_template=template), encoding="utf-8")
    os.chmod(target / "chat.py", 0o755)
    reqs = requirements()
    (target / "requirements.txt").write_text("\n".join(reqs) + "\n", encoding="utf-8")
    files = sorted(p.name for p in target.iterdir() if p.is_file()) + ["README.md"]
    (target / "README.md").write_text(render_readme(
        name=name, precision=precision, source=source, files=sorted(files), verified=verified, requirements=reqs,
        created=time.strftime("%Y-%m-%d %H:%M"), slimline_version=__version__, has_template=template),
        encoding="utf-8")
    return [tokenizer_agreement(target, tok_dir), check_chat_script(target)]


def _tokenizer_facts(tok_dir: Path) -> tuple[int | None, bool]:
    """(BOS id the model expects in front of every text or None, whether a chat template exists)."""
    try:
        from slimline.core.lm.text import load_tokenizer, starts_with_bos

        tok = load_tokenizer(tok_dir)
    except Exception:  # noqa: BLE001 - without transformers the script simply adds no BOS
        return None, False
    return starts_with_bos(tok), bool(getattr(tok, "chat_template", None))


def check_chat_script(folder: Path) -> str:
    """Run chat.py once (offline, this Python) on a prompt; its tokens must be the generate API's here."""
    from slimline.core.lm.genai import genai_generate, genai_model

    ids = _genai_encode(folder, SAMPLE)[:8] or [0]
    want = genai_generate(genai_model(folder, 1), ids, CHAT_CHECK_TOKENS, threads=1).tokens
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    proc = subprocess.run([sys.executable, str(folder / "chat.py"), "--prompt-ids", ",".join(map(str, ids)),
                           "--max-new", str(CHAT_CHECK_TOKENS), "--threads", "1", "--json"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=str(folder))
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ExportError(f"the exported chat.py failed: {tail}", subject=str(folder / "chat.py"),
                          hint="report this; nothing was written")
    try:
        got = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ExportError("the exported chat.py printed no result", subject=str(folder / "chat.py"),
                          hint="report this; nothing was written") from None
    if got["tokens"] != want:
        raise ExportError(f"chat.py generated {got['tokens']}, the verified model {want}",
                          subject=str(folder / "chat.py"), hint="report this; nothing was written")
    return (f"chat.py ran offline in a child process: {len(got['tokens'])} tokens identical to the verified "
            f"generation, {got['decode_tokens_per_s']:.1f} tokens/s on 1 thread (smoke check, not a benchmark)")


def _genai_encode(folder: Path, text: str) -> list[int]:
    """``text`` in ids of the folder's tokenizer as onnxruntime-genai (and so chat.py) reads it."""
    import onnxruntime_genai as og

    from slimline.core.lm.genai import genai_model

    return [int(t) for t in og.Tokenizer(genai_model(folder, 1)).encode(text)]


def tokenizer_agreement(folder: Path, tok_dir: Path) -> str:
    """Whether onnxruntime-genai tokenizes a sample like transformers does (chat.py's prompts then match)."""
    try:
        from slimline.core.lm.text import load_tokenizer

        ref = [int(t) for t in load_tokenizer(tok_dir)(SAMPLE, add_special_tokens=False)["input_ids"]]
    except Exception as exc:  # noqa: BLE001 - a note, not a verdict
        return f"tokenizer not compared with transformers ({type(exc).__name__})"
    got = _genai_encode(folder, SAMPLE)
    if got == ref:
        return f"tokenizer: onnxruntime-genai encodes a sample sentence exactly like transformers ({len(ref)} tokens)"
    return (f"WARNING tokenizer: onnxruntime-genai encodes a sample sentence as {got[:12]}…, transformers as "
            f"{ref[:12]}…: prompts typed into chat.py may be tokenized differently than in training")
