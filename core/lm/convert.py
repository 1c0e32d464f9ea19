"""Causal LMs to ONNX: which handles are LMs, an HF folder for the model builder, the logits-only export.

Two ONNX forms, one owner each: the onnxruntime-genai model builder writes the deployable
KV-cache folder (:mod:`slimline.core.lm.genai`); ``torch.onnx`` (through
:mod:`slimline.core.onnx_export`) writes a plain logits model for evaluation, from a wrapper
that returns only ``logits`` with ``use_cache=False`` — with the cache on, torch.export stops
at the cache object (DESIGN §11).
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slimline.core.handle import ModelHandle
from slimline.core.lm.genai import COMPANIONS, GENAI_CONFIG, GenaiError, GenaiPrecision

CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
# what a tokenizer needs beside a model (the HF config and generation settings are not part of it)
TOKENIZER_FILES = tuple(n for n in COMPANIONS if n not in (GENAI_CONFIG, "config.json", "generation_config.json"))
EXAMPLE_TOKENS = 16
# seen with onnxruntime 1.32 / onnxruntime-genai 0.18: the builder's fp16 CPU model fails in its first decode step
FP16_HINT = ("fp16 KV-cache models are meant for GPU execution providers; onnxruntime-genai's CPU provider failed on "
             "this one: use {fp32} on CPU (int4 for a smaller model)")


class BuilderUnsupported(GenaiError):
    """The model builder does not know this architecture (the logits export still works)."""


def causal_lm_config(handle: ModelHandle) -> dict[str, Any] | None:
    """The HF config of a torch causal LM (an HF folder or a Slimline archive of one), else None."""
    if handle.family != "torch":
        return None
    cfg: dict[str, Any] | None = None
    if handle.format == "hf":
        from slimline.core.models.hf import read_config

        cfg = read_config(Path(handle.path))
    elif handle.format == "slimline_torch" and handle.meta.get("arch_kind") == "hf":
        from slimline.core.torchmodel import read_archive_meta

        meta = read_archive_meta(handle.path)
        cfg = (meta or {}).get("arch", {}).get("base", {}).get("config")
    if not cfg:
        return None
    arch = str((cfg.get("architectures") or [""])[0] or "")
    return cfg if arch.endswith(CAUSAL_SUFFIXES) else None


def architecture(cfg: dict[str, Any]) -> str:
    return str((cfg.get("architectures") or ["?"])[0])


def is_kv_decoder(handle: ModelHandle) -> bool:
    """An ONNX KV-cache decoder (the builder's, or one rewritten from it)."""
    return handle.family == "onnx" and bool(handle.meta.get("kv_cache"))


def tokenizer_folder(*candidates: str | Path | None) -> Path | None:
    """The first folder (or a file's folder) holding tokenizer files."""
    for c in candidates:
        if not c:
            continue
        p = Path(c)
        folder = p if p.is_dir() else p.parent
        if any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer.model", "vocab.json")):
            return folder
    return None


def copy_tokenizer(src_dir: Path, dst_dir: Path, *, overwrite: bool = False) -> list[str]:
    """Copy the tokenizer files of ``src_dir`` into ``dst_dir``; returns the names copied."""
    copied = []
    for name in TOKENIZER_FILES:
        f = src_dir / name
        if f.is_file() and (overwrite or not (dst_dir / name).exists()):
            shutil.copy2(f, dst_dir / name)
            copied.append(name)
    return copied


def hf_folder_for(handle: ModelHandle, work_dir: Path, tokenizer_from: list[str | Path | None]) -> Path:
    """An HF folder (config + safetensors + tokenizer) for ``handle``: its own, or one saved from it.

    A Slimline archive of an HF model (after a torch step) is saved with ``save_pretrained``;
    its tokenizer comes from the first of ``tokenizer_from`` that has one.
    """
    if handle.format == "hf":
        return Path(handle.path)
    from slimline.core.models import load_eager_module

    module = load_eager_module(handle)
    if not hasattr(module, "save_pretrained"):
        raise GenaiError(f"{Path(handle.path).name} is not a transformers model, so the model builder cannot read it")
    out = work_dir / "hf"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    module.save_pretrained(str(out))  # type: ignore[operator]
    tok = tokenizer_folder(*tokenizer_from)
    if tok is not None:
        copy_tokenizer(tok, out)
    return out


def build_genai_folder(hf_dir: Path, out_dir: Path, precision: GenaiPrecision, *,
                       log: Callable[[str], None] | None = None, cancel: Any = None,
                       context_length: int | None = None) -> Path:
    """The builder's folder for ``hf_dir``, with the head size written into the cache dims and the tokenizer.

    ``context_length``: serve at most that many positions (see ``build_genai_model``).
    Raises BuilderUnsupported when the builder does not know the architecture.
    """
    from slimline.core.lm.genai import build_genai_model, genai_onnx_name, head_size_of, pin_head_size

    try:
        folder = build_genai_model(hf_dir, out_dir, precision, log=log, cancel=cancel, context_length=context_length)
    except GenaiError as exc:
        text = exc.message
        if "not currently supported" in text or "NotImplementedError" in text:
            arch = ""
            try:
                import json

                arch = architecture(json.loads((hf_dir / "config.json").read_text(encoding="utf-8")))
            except (OSError, ValueError):
                pass
            raise BuilderUnsupported(f"the onnxruntime-genai model builder does not support {arch or 'this model'}"
                                     f" ({text.split(': ', 1)[-1]})", subject=str(hf_dir)) from None
        raise
    head = head_size_of(folder)
    if head:
        pin_head_size(folder / genai_onnx_name(folder), head)
    copy_tokenizer(hf_dir, folder)  # files the builder did not copy (tokenizer.model, vocab.json …)
    return folder


def logits_module(module: Any) -> Any:
    """``module`` wrapped to return only the logits, without a cache (what torch.export can trace)."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, lm: Any) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    return LogitsOnly(module).eval()


def export_logits_onnx(module: Any, path: Path, *, vocab_size: int, opset: int = 18,
                       external_data: bool | None = None) -> Any:
    """Export a causal LM as ``input_ids, attention_mask -> logits`` (batch and sequence dynamic)."""
    import torch

    from slimline.core.onnx_export import export_torch_to_onnx

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, max(2, int(vocab_size)), (2, EXAMPLE_TOKENS), generator=gen)
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    seq = {0: "batch", 1: "sequence"}
    return export_torch_to_onnx(logits_module(module), example, path, input_names=["input_ids", "attention_mask"],
                                output_names=["logits"], opset=opset, exporter="dynamo", dynamic_batch=True,
                                dynamic_dims={"input_ids": seq, "attention_mask": seq}, external_data=external_data)


def staging_dir(parent: Path, prefix: str) -> Path:
    """A hidden work folder beside the output (same filesystem: renames stay atomic)."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{prefix}.", dir=parent))
