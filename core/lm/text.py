"""A plain text file as token windows, the way lm-eval and llama.cpp's perplexity tool cut it.

The whole file is tokenised as one stream (no special tokens), then cut into windows of
``length`` tokens every ``stride`` tokens. When the model's tokenizer starts every text
with a BOS token (Llama, Gemma), each window gets that BOS in front — the model never saw
text without it — and all ``length`` text tokens are scored, each predicted from what
precedes it in the window. Without a BOS (GPT-2, SmolLM, Qwen) the window's first token
is context only. With ``stride < length`` (overlapping windows) only the tokens not
scored by the previous window are scored, so no token counts twice.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from slimline.core.errors import DataError

DEFAULT_LENGTH = 128
DEFAULT_COUNT = 24


class TextWindows(BaseModel):
    """Token windows of one text file, with which target positions are scored."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    ids: np.ndarray = Field(repr=False)        # [n, T] int64: BOS (if any) + window tokens
    scored: np.ndarray = Field(repr=False)     # [n, T] bool: target position t scored (predicted by logits t-1)
    source: str                                # the text file
    sha256: str                                # of the text file's bytes (cache keys, reports)
    length: int                                # text tokens per window
    stride: int
    bos_id: int | None                         # prepended to every window, or None
    stream_tokens: int                         # tokens in the whole file
    tokenizer: str                             # folder the tokenizer came from

    @property
    def count(self) -> int:
        return int(self.ids.shape[0])

    @property
    def scored_tokens(self) -> int:
        return int(self.scored.sum())

    @property
    def name(self) -> str:
        return Path(self.source).name

    def describe(self) -> str:
        """One line naming the dataset and n, for every figure computed on it."""
        bos = ", BOS prepended" if self.bos_id is not None else ""
        overlap = f", stride {self.stride}" if self.stride != self.length else ""
        return (f"{self.name}: {self.count} windows × {self.length} tokens{overlap}{bos}, "
                f"{self.scored_tokens} tokens scored")

    def take(self, n: int) -> TextWindows:
        return self.model_copy(update={"ids": self.ids[:n], "scored": self.scored[:n]})


def starts_with_bos(tokenizer: Any) -> int | None:
    """The BOS id when the tokenizer puts it in front of every text (what the model was trained with)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    try:
        ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    except Exception:
        return None
    return int(bos) if ids and int(ids[0]) == int(bos) else None


def load_tokenizer(folder: str | Path, subject: str = "") -> Any:
    """The tokenizer saved in ``folder``; a DataError naming the folder when there is none."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise DataError("text data needs the 'transformers' package", subject=subject or str(folder),
                        hint="pip install 'slimline[llm]'") from None
    from slimline.core.models.hf import TOKENIZER_FILES, has_tokenizer

    expected = ", ".join(TOKENIZER_FILES)
    if Path(folder).is_dir() and not has_tokenizer(Path(folder)):
        raise DataError(f"no usable tokenizer in {folder}: the folder has no tokenizer files, so text cannot be "
                        f"turned into tokens (looked for: {expected})", subject=subject or str(folder),
                        hint="copy the model's tokenizer files (tokenizer.json, tokenizer_config.json) from where the "
                             "model came from into the folder; a GGUF of the model carries its tokenizer, so opening "
                             "that works too")
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        raise DataError(f"no usable tokenizer in {folder}: its tokenizer files cannot be loaded "
                        f"({first or type(exc).__name__})",
                        subject=subject or str(folder),
                        hint=f"get the tokenizer files again; a loadable tokenizer is one of: {expected}") from None


def evaluation_span(settings: Any) -> int:
    """Text tokens, from the start of the evaluation file, that the run's perplexity windows read.

    A step that calibrates on the evaluation text starts its windows after this many tokens, so
    the figures measured after it are not on the text it tuned for.
    """
    length = int(getattr(settings, "window_length", DEFAULT_LENGTH))
    step = int(getattr(settings, "stride", None) or length)
    return (int(getattr(settings, "window_count", DEFAULT_COUNT)) - 1) * step + length


def text_windows(path: str | Path, tokenizer: Any, *, length: int = DEFAULT_LENGTH, count: int = DEFAULT_COUNT,
                 stride: int | None = None, tokenizer_name: str = "", skip_tokens: int = 0) -> TextWindows:
    """Cut ``path`` into at most ``count`` windows of ``length`` tokens (see the module doc), the first
    starting ``skip_tokens`` into the text (none when the text is not long enough past that point)."""
    p = Path(path)
    if length < 2:
        raise DataError(f"window length {length} is too short", subject=str(p), hint="use at least 2 tokens")
    step = int(stride or length)
    if not 0 < step <= length:
        raise DataError(f"stride {step} must be between 1 and the window length {length}", subject=str(p))
    try:
        raw = p.read_bytes()
        text = raw.decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError("text file not found", subject=str(p), hint="check the path") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text (byte {exc.start})", subject=str(p), hint="save the file as UTF-8") from None
    stream = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
    if stream.size < length + (0 if starts_with_bos(tokenizer) is not None else 1):
        raise DataError(f"the text has {stream.size} tokens, shorter than one window of {length}",
                        subject=str(p), hint="use a longer text file or a shorter window length")
    bos = starts_with_bos(tokenizer)
    skip = max(int(skip_tokens), 0)
    starts = list(range(skip, max(stream.size - length, 0) + 1, step))[: max(int(count), 1)]
    if not starts:
        raise DataError(f"the text has {stream.size} tokens, too few for a window of {length} after the first "
                        f"{skip}", subject=str(p), hint="use a longer text file or a shorter window length")
    n_ctx = length + (1 if bos is not None else 0)
    ids = np.zeros((len(starts), n_ctx), dtype=np.int64)
    scored = np.zeros((len(starts), n_ctx), dtype=bool)
    for i, s in enumerate(starts):
        window = stream[s:s + length]
        off = 1 if bos is not None else 0
        if bos is not None:
            ids[i, 0] = bos
        ids[i, off:] = window
        first_new = 0 if i == 0 else length - step   # tokens the previous window did not score
        lo = max(off + first_new, 1)                  # position 0 has nothing before it
        scored[i, lo:] = True
    return TextWindows(ids=ids, scored=scored, source=str(p), sha256=hashlib.sha256(raw).hexdigest(),
                       length=length, stride=step, bos_id=bos, stream_tokens=int(stream.size),
                       tokenizer=tokenizer_name)
