"""How much memory loading a model will take, estimated from its config before anything is loaded.

A 7B-parameter folder opened on a 16 GB laptop should fail in a second with the numbers and what
to do, not after minutes of swapping or with the process killed by the OS. The estimate is
deliberately simple and stated as such: parameters × bytes per parameter (the dtype the weights
load in), times the copies the load holds at its peak, plus the activations of one evaluation
window (batch × tokens) for a text model. The Python/torch runtime itself is not counted.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from slimline.core.errors import ModelLoadError

DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "float64": 8, "int8": 1,
               "uint8": 1}
WINDOW_TOKENS = 128   # the evaluation window the estimate assumes (core/lm/text.DEFAULT_LENGTH)
# test hook and escape hatch: pretend this many bytes are available (e.g. "2e9")
AVAILABLE_ENV = "SLIMLINE_AVAILABLE_MEMORY"


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of loading (and evaluating) a model, in bytes, with what each part is."""

    params: int
    dtype: str
    copies: int              # float copies of the weights alive at the peak (2 while dequantizing a GGUF)
    weights: int             # params × bytes per param × copies
    activations: int         # one evaluation window; 0 for models without a text config
    batch: int = 1
    tokens: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.activations

    def describe(self) -> str:
        """One line: the total and its parts, e.g. '~0.60 GB (weights 538 MB float32 + activations …)'."""
        parts = [f"weights {_gb(self.weights)} {self.dtype}" + (f" ×{self.copies} copies" if self.copies > 1 else "")]
        if self.activations:
            parts.append(f"activations {_gb(self.activations)} for {self.batch}×{self.tokens} tokens")
        return f"~{_gb(self.total)} ({' + '.join(parts)})"


def config_dtype(config: dict[str, Any], default: str = "float32") -> str:
    """The dtype transformers loads the weights in: the config's ``dtype``/``torch_dtype``, else float32."""
    raw = config.get("dtype") or config.get("torch_dtype") or default
    name = str(raw).replace("torch.", "")
    return name if name in DTYPE_BYTES else default


def _text_dims(config: dict[str, Any]) -> tuple[int, int, int, int, int, int] | None:
    """(vocab, hidden, intermediate, layers, heads, kv width) of a text model's config, or None."""
    inner = config.get("text_config")
    cfg: dict[str, Any] = inner if isinstance(inner, dict) else config
    vocab = cfg.get("vocab_size")
    hidden = cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model")
    layers = cfg.get("num_hidden_layers") or cfg.get("n_layer") or cfg.get("num_layers")
    if not (isinstance(vocab, int) and isinstance(hidden, int) and isinstance(layers, int)):
        return None
    heads = int(cfg.get("num_attention_heads") or cfg.get("n_head") or 1)
    inter = int(cfg.get("intermediate_size") or cfg.get("n_inner") or 4 * hidden)
    head_dim = int(cfg.get("head_dim") or hidden // max(heads, 1))
    kv = int(cfg.get("num_key_value_heads") or heads) * head_dim
    return vocab, hidden, inter, layers, heads, kv


def activation_bytes(config: dict[str, Any], *, batch: int = 1, tokens: int = WINDOW_TOKENS) -> int:
    """Float32 activations of one forward pass over ``batch × tokens`` (0 when the config is not a text model).

    Per token: logits and their log-softmax (2 × vocab), the KV cache of every layer (2 × kv width × layers),
    and the widest single layer alive at once (4 × hidden + 3 × intermediate); plus the attention scores
    and their softmax (2 × heads × tokens²). Without gradients only one layer's intermediates live at a time.
    """
    dims = _text_dims(config)
    if dims is None:
        return 0
    vocab, hidden, inter, layers, heads, kv = dims
    per_token = 2 * vocab + 2 * kv * layers + 4 * hidden + 3 * inter
    return 4 * batch * (tokens * per_token + 2 * heads * tokens * tokens)


def estimate(config: dict[str, Any], params: int, *, dtype: str | None = None, copies: int = 1,
             batch: int = 1, tokens: int = WINDOW_TOKENS) -> MemoryEstimate:
    """The estimate for ``params`` parameters loaded in ``dtype`` (default: the config's) and one window."""
    name = dtype or config_dtype(config)
    acts = activation_bytes(config, batch=batch, tokens=tokens)
    return MemoryEstimate(params=params, dtype=name, copies=copies, weights=params * DTYPE_BYTES[name] * copies,
                          activations=acts, batch=batch, tokens=tokens if acts else 0)


def available_memory() -> int | None:
    """Bytes the OS can give this process now (psutil's ``available``); None when it cannot tell."""
    override = os.environ.get(AVAILABLE_ENV)
    if override:
        try:
            return int(float(override))
        except ValueError:
            pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - psutil missing or /proc unreadable: no check rather than a wrong one
        return None


def require_fits(est: MemoryEstimate, *, subject: str, doing: str) -> None:
    """ModelLoadError before loading when the estimate exceeds the memory available now."""
    avail = available_memory()
    if avail is None or est.total <= avail:
        return
    raise ModelLoadError(
        f"{doing} needs about {est.describe()}, but only {_gb(avail)} of memory is available",
        subject=subject,
        hint="close other programs and try again, use a machine with more memory, or open a smaller model "
             "(fewer parameters, or an ONNX export quantized to int8/int4 on a machine that has the memory)")
