"""Hugging Face folders (config.json + safetensors/bin weights).

transformers is optional: without it the folder still opens for inspection
(weights read straight from safetensors), and the capability reason says how to
enable running and compressing it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimline.core.errors import ModelLoadError
from slimline.core.handle import Capabilities, ModelHandle, TensorSpec
from slimline.core.models import memory
from slimline.core.models.sniff import hf_weight_files
from slimline.core.models.tensors import WeightSource, file_size, safetensors_source, tensor_dict_source
from slimline.core.models.torch_files import load_state_dict

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEFAULT_SEQUENCE = 128
# written by Slimline beside a folder it made from another format (a dequantized GGUF): notes for the handle
SOURCE_FILE = "slimline_source.json"
# any of these makes a folder's tokenizer loadable by AutoTokenizer (fast JSON, BPE pair, SentencePiece, WordPiece)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model",
                   "spiece.model", "vocab.txt")
_AUTO_CLASSES = ("AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModelForSequenceClassification",
                 "AutoModelForTokenClassification", "AutoModelForQuestionAnswering", "AutoModelForSeq2SeqLM",
                 "AutoModelForImageClassification", "AutoModelForMultipleChoice", "AutoModelForPreTraining",
                 "AutoModel")


def read_config(folder: Path) -> dict[str, Any]:
    cfg_path = folder / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"config.json is not valid JSON ({exc})", subject=str(cfg_path),
                             hint="get the file again or re-save the model with save_pretrained") from None
    if not isinstance(cfg, dict) or "model_type" not in cfg:
        raise ModelLoadError("config.json has no 'model_type', so it is not a Hugging Face model config",
                             subject=str(cfg_path), hint="re-save the model with save_pretrained")
    return cfg


def transformers_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("transformers") is not None


def auto_class_for(config: dict[str, Any]) -> str:
    """The Auto class whose mapping holds config.architectures[0] (AutoModel if none does)."""
    arch = (config.get("architectures") or [None])[0]
    if not arch:
        return "AutoModel"
    try:
        import transformers

        cfg_cls = type(transformers.AutoConfig.for_model(**config))
        for auto_name in _AUTO_CLASSES:
            auto = getattr(transformers, auto_name, None)
            mapping = getattr(auto, "_model_mapping", None)
            if mapping is None:
                continue
            try:
                target = mapping[cfg_cls]
            except (KeyError, ValueError):
                continue
            targets = target if isinstance(target, (list, tuple)) else (target,)
            if any(getattr(t, "__name__", "") == arch for t in targets):
                return auto_name
    except Exception:  # noqa: BLE001 - unknown architectures fall back to the base model
        pass
    return "AutoModel"


def _io_specs(cfg: dict[str, Any]) -> tuple[list[TensorSpec], list[TensorSpec], dict[str, int]]:
    arch = (cfg.get("architectures") or [""])[0]
    if "vocab_size" not in cfg and "image_size" in cfg:
        size = cfg["image_size"] if isinstance(cfg["image_size"], int) else cfg["image_size"][0]
        inputs = [TensorSpec(name="pixel_values", dtype="float32",
                             shape=["batch", int(cfg.get("num_channels", 3)), size, size])]
        outs = [TensorSpec(name="logits", dtype="float32", shape=["batch", int(cfg.get("num_labels", 2))])]
        return inputs, outs, {"batch": 1}
    max_pos = cfg.get("max_position_embeddings") or cfg.get("n_positions") or DEFAULT_SEQUENCE
    seq = min(DEFAULT_SEQUENCE, int(max_pos))
    inputs = [TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"]),
              TensorSpec(name="attention_mask", dtype="int64", shape=["batch", "sequence"])]
    if arch.endswith(("ForSequenceClassification",)):
        n_labels = len(cfg.get("id2label") or {}) or int(cfg.get("num_labels", 2))
        outs = [TensorSpec(name="logits", dtype="float32", shape=["batch", n_labels])]
    elif arch.endswith(("LMHeadModel", "ForCausalLM", "ForMaskedLM", "ForPreTraining")):
        outs = [TensorSpec(name="logits", dtype="float32", shape=["batch", "sequence", int(cfg.get("vocab_size", 0))])]
    else:
        hidden = cfg.get("hidden_size") or cfg.get("d_model") or cfg.get("n_embd") or "hidden"
        outs = [TensorSpec(name="last_hidden_state", dtype="float32", shape=["batch", "sequence", hidden])]
    return inputs, outs, {"batch": 1, "sequence": seq}


@dataclass(frozen=True)
class ModuleFacts:
    """What the model class built from a config says, with no weights loaded (meta device)."""

    op_types: dict[str, str] = field(default_factory=dict)   # module path -> class name
    tied: dict[str, str] = field(default_factory=dict)       # parameter name -> the name it shares storage with
    params: int = 0                                          # unique parameters (tied ones counted once)


def hf_module_facts(config: dict[str, Any], auto_class: str) -> ModuleFacts:
    """Op types, tied parameters and the parameter count of the class built on the meta device; empty if
    transformers cannot build it. Cached per config (building a 1B model on meta still takes a moment)."""
    key = ("hf-module-facts", auto_class, json.dumps(config, sort_keys=True, default=str))

    def build() -> ModuleFacts:
        try:
            import torch
            import transformers

            cfg = transformers.AutoConfig.for_model(**config)
            with torch.device("meta"):
                model = getattr(transformers, auto_class).from_config(cfg)
        except Exception:  # noqa: BLE001 - facts are a nicety; the table works without them
            return ModuleFacts()
        first: dict[int, str] = {}
        tied: dict[str, str] = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            if id(p) in first:
                tied[name] = first[id(p)]
            else:
                first[id(p)] = name
        params = sum(p.numel() for p in model.parameters())
        return ModuleFacts({p: type(m).__name__ for p, m in model.named_modules()}, tied, int(params))

    if key not in _FACTS:
        if len(_FACTS) >= 16:
            _FACTS.pop(next(iter(_FACTS)))
        _FACTS[key] = build()
    return _FACTS[key]


_FACTS: dict[tuple[str, str, str], ModuleFacts] = {}   # own cache: the weight-source LRU holds only 4 entries


def hf_op_types_from_config(config: dict[str, Any], auto_class: str) -> dict[str, str]:
    """Class names of an HF model built on the meta device (no memory, no weights); {} if unavailable."""
    return hf_module_facts(config, auto_class).op_types


def hf_tensors(folder: Path) -> WeightSource:
    files = hf_weight_files(folder)
    if all(f.suffix == ".safetensors" for f in files):
        return safetensors_source(files)
    merged: dict[str, Any] = {}
    for f in files:
        merged.update(load_state_dict(f))
    return tensor_dict_source(merged)


def hf_weight_source(handle: ModelHandle) -> WeightSource:
    folder = Path(handle.path)
    src = hf_tensors(folder)
    cfg = read_config(folder)
    if transformers_available():
        ops = hf_op_types_from_config(cfg, handle.meta.get("auto_class") or "AutoModel")
        prefix = _common_prefix_fix(src, ops)
        for e in src.entries:
            e.op_type = ops.get(e.layer, "") or ops.get(prefix + e.layer, "") or ops.get(e.layer.split(".", 1)[-1], "")
    return src


def _common_prefix_fix(src: WeightSource, ops: dict[str, str]) -> str:
    """Older checkpoints drop the base-model prefix (e.g. 'bert.'); find it from the module tree."""
    if not src.entries or not ops or src.entries[0].layer in ops:
        return ""
    for path in ops:
        head = path.split(".", 1)[0]
        if f"{head}.{src.entries[0].layer}" in ops:
            return head + "."
    return ""


def open_hf(folder: Path) -> ModelHandle:
    cfg = read_config(folder)
    files = hf_weight_files(folder)
    src = hf_tensors(folder)
    extra = [folder / n for n in ("config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json",
                                  "generation_config.json") if (folder / n).is_file()]
    all_files = extra + files
    inputs, outputs, dims = _io_specs(cfg)
    have_tf = transformers_available()
    caps = Capabilities() if have_tf else Capabilities(
        run=False, compress=False,
        reason="transformers is not installed: inspect yes; to run, measure or compress this Hugging Face "
               "model install it with pip install 'slimline[hf]'")
    auto = auto_class_for(cfg) if have_tf else "AutoModel"
    counted = {e.name: e.numel for e in src.entries if not e.name.endswith(("num_batches_tracked", "position_ids"))}
    facts = hf_module_facts(cfg, auto) if have_tf else ModuleFacts()
    twins = tied_duplicates(list(counted), facts)
    params = sum(n for name, n in counted.items() if name not in twins)
    notes = source_notes(folder)
    is_lm = _is_causal_lm(cfg)
    if is_lm and not has_tokenizer(folder):
        notes.append(f"no tokenizer files in the folder ({', '.join(TOKENIZER_FILES[:2])}, ...): the model can be "
                     "inspected and run on token ids, but text data needs its tokenizer beside it")
    est = memory.estimate(cfg, params)
    meta: dict[str, Any] = {"model_type": cfg.get("model_type"), "architectures": cfg.get("architectures") or [],
                            "auto_class": auto, "max_position_embeddings": cfg.get("max_position_embeddings"),
                            "memory_bytes": est.total, "memory": est.describe()}
    if twins:
        meta["tied"] = sorted(twins)
    if is_lm:
        meta["tokenizer"] = has_tokenizer(folder)
    return ModelHandle(
        path=str(folder), format="hf", family="torch", files=[str(f) for f in all_files], inputs=inputs,
        outputs=outputs, dim_defaults=dims, param_count=params,
        bytes_on_disk=sum(file_size(f) for f in all_files),
        producer=f"transformers {cfg.get('transformers_version', '')}".strip(), trusted=True, capabilities=caps,
        notes=notes, meta=meta,
    )


def _is_causal_lm(cfg: dict[str, Any]) -> bool:
    return any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in cfg.get("architectures") or [])


def has_tokenizer(folder: Path) -> bool:
    return any((folder / n).is_file() for n in TOKENIZER_FILES)


def tied_duplicates(names: list[str], facts: ModuleFacts) -> set[str]:
    """Tensors stored in the files that are tied to another stored one (lm_head = embeddings): count them once.

    Old checkpoints drop the base-model prefix ('transformer.'), so the names also match without it.
    """
    have = set(names)
    out = set()
    for alias, target in facts.tied.items():
        for a, t in ((alias, target), (alias.split(".", 1)[-1], target.split(".", 1)[-1])):
            if a in have and t in have and a != t:
                out.add(a)
    return out


def source_notes(folder: Path) -> list[str]:
    """Notes Slimline left beside a folder it made from another format (e.g. 'dequantized from GGUF ...')."""
    path = folder / SOURCE_FILE
    if not path.is_file():
        return []
    try:
        record = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return []
    notes = record.get("notes") if isinstance(record, dict) else None
    return [str(n) for n in notes] if isinstance(notes, list) else []


def load_hf_module(handle: ModelHandle) -> "torch.nn.Module":
    """A fresh eager transformers model with its weights, offline, in eval mode (safe to edit)."""
    folder = Path(handle.path)
    if not transformers_available():
        raise ModelLoadError("running this Hugging Face model needs the 'transformers' package",
                             subject=str(folder), hint="pip install 'slimline[hf]'")

    cfg = read_config(folder)
    est = memory.estimate(cfg, handle.param_count)
    try:
        memory.require_fits(est, subject=str(folder), doing="loading this model")
    except ModelLoadError:
        described = hf_module_facts(cfg, handle.meta.get("auto_class") or "AutoModel").params
        if described > 2 * max(handle.param_count, 1):  # a config that does not describe these weights
            raise ModelLoadError(
                f"config.json describes a model of {described:,} parameters but the weight files hold "
                f"{handle.param_count:,}: they do not belong together (loading would need {est.describe()})",
                subject=str(folder), hint="check config.json and the weight files match "
                                          "(re-save the model with save_pretrained)") from None
        raise

    def build() -> Any:
        import transformers

        auto = getattr(transformers, handle.meta.get("auto_class") or "AutoModel")
        try:
            model = auto.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
            raise ModelLoadError(f"transformers could not load the folder ({first})", subject=str(folder),
                                 hint="check config.json and the weight files match "
                                      "(re-save with save_pretrained)") from None
        return model.eval()

    return build()


def hf_base(handle: ModelHandle, module: Any) -> dict[str, Any]:
    """Architecture base for a Slimline archive of an HF model."""
    return {"kind": "hf", "config": module.config.to_dict(), "auto_class": handle.meta.get("auto_class") or "AutoModel"}


# --------------------------------------------------------------------------- format table entries

def hf_open(path: Path, trust: bool) -> ModelHandle:
    del trust  # weights come from safetensors or the restricted unpickler
    return open_hf(path)


def hf_to_archive(handle: ModelHandle, out: Path) -> ModelHandle:
    """A Slimline archive of an HF model (keeps the config so the same class is rebuilt)."""
    from slimline.core.torchmodel import save_torch_module

    module = load_hf_module(handle)
    return save_torch_module(module, out, inputs=handle.inputs, outputs=handle.outputs,
                             base=hf_base(handle, module),
                             extra_meta={"source_format": "hf", "source": Path(handle.path).name})
