"""A float32 HF folder from a GGUF file, for tests until Slimline opens GGUF itself (core.models.gguf).

transformers dequantizes the GGUF on load (it needs the ``gguf`` package); the loaded model carries a
quantization config and will not ``save_pretrained`` as is, so it is rebuilt from its config and
state dict first (DESIGN §11).
"""
from __future__ import annotations

from pathlib import Path


def float_folder_from_gguf(gguf: Path, out: Path) -> Path:
    """``out`` (config.json + model.safetensors + tokenizer), made once; reused when already there."""
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    cfg = loaded.config
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(cfg, attr):
            delattr(cfg, attr)
    fresh = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    tmp = out.with_name(out.name + ".part")
    fresh.eval().save_pretrained(str(tmp))
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(tmp))
    tmp.rename(out)
    return out
