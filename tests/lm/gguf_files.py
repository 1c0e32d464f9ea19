"""Tiny GGUF files written here with the `gguf` package's GGUFWriter, the way llama.cpp's converter lays them out.

``write_llama_gguf`` turns a tiny HF Llama folder (tests/core/modelfiles.hf_llama) into a GGUF: llama.cpp
tensor names, q/k rows permuted for its rotary layout, the BPE tokenizer as a "gpt2" token list + merges, and
per-tensor types (F32, F16, Q8_0, or any type the caller names). Opening it must give back the HF model.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

_BLOCK = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
          "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
          "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def gguf_name(hf_name: str) -> str:
    """llama.cpp's tensor name for an HF Llama parameter name."""
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    parts = hf_name.split(".")   # model.layers.{i}.{module...}.weight
    module = ".".join(parts[3:-1])
    return f"blk.{parts[2]}.{_BLOCK[module]}.{parts[-1]}"


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permute of q/k rows (transformers reverses it when loading)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_llama_gguf(hf_folder: Path, path: Path, *, types: dict[str, str] | None = None, default: str = "F32",
                     arch: str = "llama", extra: dict[str, np.ndarray] | None = None) -> Path:
    """Write ``hf_folder``'s model + tokenizer as a GGUF; ``types`` maps GGUF tensor names to GGML types.

    ``extra`` adds raw tensors as they are (e.g. a float64 one, which GGUFWriter stores as F64).
    """
    import gguf
    from safetensors.numpy import load_file

    cfg = json.loads((hf_folder / "config.json").read_text())
    state = load_file(str(hf_folder / "model.safetensors"))
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny-llama-test")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(float(cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    w.add_rope_dimension_count(cfg["hidden_size"] // heads)
    w.add_vocab_size(cfg["vocab_size"])
    _add_tokenizer(w, hf_folder, cfg)
    types = types or {}
    for hf_name, arr in state.items():
        name = gguf_name(hf_name)
        data = arr.astype(np.float32)
        if name.endswith("attn_q.weight"):
            data = _permute(data, heads)
        elif name.endswith("attn_k.weight"):
            data = _permute(data, kv_heads)
        qtype = gguf.GGMLQuantizationType[types.get(name, default if data.ndim == 2 else "F32")]
        if qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, data)
        elif qtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, data.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    for name, arr in (extra or {}).items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _add_tokenizer(w: Any, hf_folder: Path, cfg: dict) -> None:
    tok = json.loads((hf_folder / "tokenizer.json").read_text())
    vocab: dict[str, int] = tok["model"]["vocab"]
    for added in tok.get("added_tokens", []):
        vocab.setdefault(added["content"], added["id"])
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {a["content"] for a in tok.get("added_tokens", []) if a.get("special")}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(int(cfg["bos_token_id"]))
    w.add_eos_token_id(int(cfg["eos_token_id"]))
    w.add_pad_token_id(int(cfg["pad_token_id"]))
    post = tok.get("post_processor") or {}
    w.add_add_bos_token(bool(post))
