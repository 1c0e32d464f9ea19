"""Prompts for the side-by-side generations: the user's list, or the first sentences of the text file.

A prompt list is a ``.txt`` file (one prompt per line, blank lines skipped) or a ``.json``
list of strings; anything else is refused with a DataError naming the file. Without a
list the first sentences of the evaluation text serve, and the report says so.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel

from slimline.core.errors import DataError

DEFAULT_PROMPT_COUNT = 4
MAX_PROMPTS = 64            # each prompt is generated and timed for every step
MAX_PROMPT_CHARS = 4000
HEAD_CHARS = 65536         # sentences for prompts come from the start of the text
SENTENCE_WORDS = 24         # a sentence taken from the text file is cut to this many words
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class Prompts(BaseModel):
    texts: list[str]
    source: str             # "prompts.txt (3 prompts)" / "first 4 sentences of eval.txt"


def load_prompts(path: str | Path) -> Prompts:
    """The user's prompt list (.txt: one per line; .json: a list of strings)."""
    p = Path(path)
    hint = "give a .txt file with one prompt per line, or a .json list of strings"
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError("prompt file not found", subject=str(p), hint="check the path") from None
    except UnicodeDecodeError:
        raise DataError("the prompt file is not UTF-8 text", subject=str(p), hint=hint) from None
    suffix = p.suffix.lower()
    if suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON (line {exc.lineno}: {exc.msg})", subject=str(p), hint=hint) from None
        if not isinstance(doc, list) or not all(isinstance(x, str) for x in doc):
            raise DataError(f"expected a JSON list of strings, got {_kind(doc)}", subject=str(p), hint=hint)
        texts = [x.strip() for x in doc if x.strip()]
    elif suffix in (".txt", ".text", ""):
        texts = [ln.strip() for ln in text.splitlines() if ln.strip()]
    else:
        raise DataError(f"unknown prompt list type '{suffix}'", subject=str(p), hint=hint)
    if not texts:
        raise DataError("the prompt list is empty", subject=str(p), hint=hint)
    if len(texts) > MAX_PROMPTS:
        raise DataError(f"{len(texts)} prompts; at most {MAX_PROMPTS} (each is generated and timed for every step)",
                        subject=str(p), hint="keep a few representative prompts")
    long = next((i for i, t in enumerate(texts) if len(t) > MAX_PROMPT_CHARS), None)
    if long is not None:
        raise DataError(f"prompt {long + 1} has {len(texts[long])} characters (at most {MAX_PROMPT_CHARS})",
                        subject=str(p), hint="shorten it")
    return Prompts(texts=texts, source=f"{p.name} ({len(texts)} prompt{'s' if len(texts) != 1 else ''})")


def _kind(doc: object) -> str:
    if isinstance(doc, list):
        bad = next(x for x in doc if not isinstance(x, str))
        return f"a list holding {type(bad).__name__} {json.dumps(bad)[:40]}"
    return type(doc).__name__


def prompts_from_text(path: str | Path, count: int = DEFAULT_PROMPT_COUNT) -> Prompts:
    """The first ``count`` sentences (of three words or more) of the evaluation text.

    Lines of one paragraph are joined first: hard-wrapped text breaks sentences across lines.
    """
    p = Path(path)
    with p.open(encoding="utf-8-sig", errors="replace") as fh:
        head = fh.read(HEAD_CHARS)
    found: list[str] = []
    for para in re.split(r"\n\s*\n", head):
        for sentence in _SENTENCE_END.split(" ".join(para.split())):
            words = sentence.split()
            if len(words) >= 3:
                found.append(" ".join(words[:SENTENCE_WORDS]))
            if len(found) >= count:
                break
        if len(found) >= count:
            break
    if not found:
        raise DataError("no sentence of three words or more to use as a prompt", subject=str(p),
                        hint="give a prompt list (evaluation.lm.prompts)")
    return Prompts(texts=found, source=f"first {len(found)} sentence{'s' if len(found) != 1 else ''} of {p.name}")
