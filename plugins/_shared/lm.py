"""Causal language models inside steps: which handles are LMs, their text data, tokenizer and saving.

Why here: LLM pruning, low-rank on LLM layers and LM distillation all need the same four
things — tell an LM from other torch models, find the text file behind the run's data
(calibration, training), find the tokenizer (a pruned model in the step cache may have
none beside it), and write the edited model back in a form that reloads without pickle
(an HF folder with the tokenizer for HF input, so export and generation keep working; a
Slimline archive with the *edited* config otherwise).
"""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimline.core.errors import StepFailed
from slimline.core.handle import ModelHandle

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from slimline.core.lm.text import TextWindows
    from slimline.core.plugin import StepContext

TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst")
_LM_ARCH_ENDS = ("ForCausalLM", "LMHeadModel")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
                   "generation_config.json")


def _archive_base(handle: ModelHandle) -> dict[str, Any]:
    from slimline.core.torchmodel import read_archive_meta

    meta = read_archive_meta(handle.path) or {}
    return dict(meta.get("arch", {}).get("base", {}))


def lm_config(handle: ModelHandle) -> dict[str, Any] | None:
    """The HF config dict of a causal LM handle (HF folder or HF-based archive), else None."""
    cfg: dict[str, Any] | None = None
    if handle.format == "hf":
        from slimline.core.models.hf import read_config

        cfg = read_config(Path(handle.path))
    elif handle.format == "slimline_torch":
        try:
            base = _archive_base(handle)
        except Exception:  # noqa: BLE001 - not an archive we can read: not an LM
            return None
        if base.get("kind") != "hf":
            return None
        cfg = dict(base.get("config") or {})
        if base.get("auto_class") == "AutoModelForCausalLM":
            return cfg
    if cfg is None:
        return None
    archs = cfg.get("architectures") or []
    return cfg if any(str(a).endswith(_LM_ARCH_ENDS) for a in archs) else None


def is_causal_lm(handle: ModelHandle) -> bool:
    return lm_config(handle) is not None


@dataclass
class TextSource:
    """The text file a step reads, the role it came from, and whether the run also scores on it."""

    path: Path
    role: str
    same_as_eval: bool
    overlaps_eval: bool = False   # its windows include text the run's evaluation scores (too short to avoid it)


def text_source(ctx: "StepContext", roles: tuple[str, ...]) -> TextSource | None:
    """The first text file among ``ctx.data``'s datasets in ``roles`` order (None when there is none)."""
    data = ctx.data
    if data is None:
        return None
    ev = getattr(data, "eval", None)
    ev_src = _text_path(ev)
    for role in roles:
        p = _text_path(getattr(data, role, None))
        if p is not None:
            return TextSource(path=p, role=role, same_as_eval=role == "eval" or (ev_src is not None and ev_src == p))
    return None


def _text_path(ds: Any) -> Path | None:
    src = getattr(ds, "source", None) if ds is not None else None
    if not src:
        return None
    p = Path(str(src))
    return p.resolve() if p.suffix.lower() in TEXT_SUFFIXES and p.is_file() else None


def _has_tokenizer(folder: Path) -> bool:
    return folder.is_dir() and any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer.model",
                                                                       "vocab.json", "tokenizer_config.json"))


def tokenizer_folder(handle: ModelHandle, ctx: "StepContext") -> Path:
    """Where this LM's tokenizer lives: beside the model, else beside the pipeline's input model."""
    for h in (handle, ctx.source_model):
        if h is None:
            continue
        p = Path(h.path)
        folder = p if p.is_dir() else p.parent
        if _has_tokenizer(folder):
            return folder
    raise StepFailed("no tokenizer for this language model", subject=handle.path,
                     hint="open the model from its Hugging Face folder (tokenizer.json beside config.json), "
                          "so the text can be cut into token windows")


def windows(ctx: "StepContext", handle: ModelHandle, roles: tuple[str, ...], *, length: int, count: int,
            what: str) -> tuple["TextWindows", TextSource]:
    """Token windows of the run's text data for ``what`` (a step purpose, used in messages)."""
    from slimline.core.errors import DataError
    from slimline.core.lm.text import load_tokenizer

    src = text_source(ctx, roles)
    if src is None:
        raise StepFailed(f"{what} needs a text file (.txt) as {' or '.join(roles)} data", subject="data",
                         hint="pass a plain text file: --train-data TRAIN.txt (and --data EVAL.txt to score on "
                              "other text)")
    tok_dir = tokenizer_folder(handle, ctx)
    try:
        tok = load_tokenizer(tok_dir)
        win = cut_windows(src, tok, ctx, length=length, count=count, tokenizer_name=str(tok_dir))
    except DataError as exc:
        raise StepFailed(f"{what}: {exc.message}", subject=exc.subject or str(src.path), hint=exc.hint) from exc
    return win, src


def cut_windows(src: TextSource, tok: Any, ctx: "StepContext", *, length: int, count: int,
                tokenizer_name: str = "") -> "TextWindows":
    """A step's windows of ``src``; on the evaluation text they start after the tokens the run scores.

    Sets ``src.overlaps_eval`` when the text is too short for that (the step then reads the scored text).
    """
    from slimline.core.errors import DataError
    from slimline.core.lm.text import evaluation_span, text_windows

    if src.same_as_eval:
        settings = getattr(getattr(ctx, "evaluation", None), "lm", None)
        try:
            return text_windows(src.path, tok, length=length, count=count, tokenizer_name=tokenizer_name,
                                skip_tokens=evaluation_span(settings))
        except DataError:
            src.overlaps_eval = True
    return text_windows(src.path, tok, length=length, count=count, tokenizer_name=tokenizer_name)


def id_batches(ids: Any, batch_size: int, device: str = "cpu") -> Iterator["torch.Tensor"]:
    """Rows of a [n, T] id array as LongTensor batches."""
    import numpy as np
    import torch

    arr = np.asarray(ids, dtype=np.int64)
    for s in range(0, len(arr), batch_size):
        yield torch.from_numpy(np.ascontiguousarray(arr[s:s + batch_size])).to(device)


def load_lm(handle: ModelHandle) -> "torch.nn.Module":
    """An editable eager LM (HF folder or Slimline archive) in eval mode, float32 on the CPU."""
    from slimline.plugins._shared import common

    module = common.load_module(handle)
    return module.float().eval()


def copy_tokenizer(src: Path, dst: Path) -> list[Path]:
    """Copy tokenizer (and generation config) files so the output folder is self-contained."""
    copied = []
    for name in TOKENIZER_FILES:
        f = src / name
        if f.is_file() and not (dst / name).exists():
            shutil.copy2(f, dst / name)
            copied.append(dst / name)
    return copied


def save_lm(module: "torch.nn.Module", handle: ModelHandle, ctx: "StepContext", *, tokenizer_dir: Path | None,
            name: str = "model", replacements: dict[str, Any] | None = None,
            extra_meta: dict[str, Any] | None = None) -> ModelHandle:
    """Write an edited LM; HF input → HF folder (safetensors + tokenizer), archive input → archive.

    The config saved is the module's own (edited) config, so a model with fewer blocks,
    heads or channels rebuilds with the right shapes. Replacement modules (low-rank) only
    fit an archive. Written to a temporary folder/file, then renamed.
    """
    from slimline.core.torchmodel import read_archive_meta, save_torch_module

    module = module.cpu().eval()
    model: Any = module  # an HF PreTrainedModel (save_pretrained, config)
    if handle.format == "hf" and not replacements:
        from slimline.core.models.hf import open_hf

        final = ctx.output_path(name)
        tmp = final.with_name(f".{final.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp), safe_serialization=True)
        if tokenizer_dir is not None:
            copy_tokenizer(tokenizer_dir, tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        return open_hf(final)
    base: dict[str, Any] = {"kind": "hf", "config": model.config.to_dict(), "auto_class": "AutoModelForCausalLM"}
    old_repl: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if handle.format == "slimline_torch":
        meta = read_archive_meta(handle.path) or {}
        old = meta.get("arch", {})
        base["auto_class"] = old.get("base", {}).get("auto_class") or base["auto_class"]
        old_repl = dict(old.get("replacements") or {})
        extra = dict(meta.get("extra") or {})
    extra.update(extra_meta or {})
    path = ctx.output_path(f"{name}.safetensors")
    return save_torch_module(module, path, inputs=handle.inputs, outputs=handle.outputs, base=base,
                             replacements={**old_repl, **(replacements or {})}, extra_meta=extra)


def archive_replacements(handle: ModelHandle) -> dict[str, Any]:
    """Replacement modules recorded in a Slimline archive (low-rank layers), {} for other handles."""
    if handle.format != "slimline_torch":
        return {}
    from slimline.core.torchmodel import read_archive_meta

    meta = read_archive_meta(handle.path) or {}
    return dict(meta.get("arch", {}).get("replacements") or {})


def decoder_blocks(module: "torch.nn.Module") -> tuple[str, Any]:
    """(path, ModuleList) of the decoder blocks: the ModuleList as long as config.num_hidden_layers."""
    import torch.nn as nn

    cfg = getattr(module, "config", None)
    n = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    for path, mod in module.named_modules():
        if isinstance(mod, nn.ModuleList) and n and len(mod) == int(n):
            return path, mod
    raise StepFailed("cannot find the decoder blocks of this language model", subject=type(module).__name__,
                     hint="this step knows HF causal LMs whose config has num_hidden_layers (Llama, Qwen, "
                          "Gemma, Mistral, Phi, GPT-2 families)")
