"""A small parser for Triton's config.pbtxt (protobuf text format subset), for tests.

Handles ``key: value``, ``key [ ... ]`` lists of scalars or messages and ``key { ... }``
messages; repeated keys become lists. Enough to check what Slimline writes, and
strict: anything it does not understand raises.
"""
from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([\[\]{}:,])|([^\s\[\]{}:,"#]+))')


def tokenize(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise ValueError(f"cannot parse at {text[pos:pos + 20]!r}")
        pos = m.end()
        if m.group(1):
            continue
        tok = m.group(2) or m.group(3) or m.group(4)
        if tok:
            out.append(tok)
    return out


def _scalar(tok: str) -> Any:
    if tok.startswith('"'):
        return tok[1:-1]
    try:
        return int(tok)
    except ValueError:
        return tok  # enum identifiers such as TYPE_FP32


def _message(toks: list[str], i: int, end: str | None) -> tuple[dict[str, Any], int]:
    msg: dict[str, Any] = {}
    while i < len(toks):
        if toks[i] == end:
            return msg, i + 1
        key = toks[i]
        i += 1
        if toks[i] == ":":
            i += 1
        if toks[i] == "{":
            value, i = _message(toks, i + 1, "}")
        elif toks[i] == "[":
            value, i = [], i + 1
            while toks[i] != "]":
                if toks[i] == "{":
                    item, i = _message(toks, i + 1, "}")
                else:
                    item, i = _scalar(toks[i]), i + 1
                value.append(item)
                if toks[i] == ",":
                    i += 1
            i += 1
        else:
            value, i = _scalar(toks[i]), i + 1
        if key in msg:
            prev = msg[key]
            msg[key] = (prev if isinstance(prev, list) else [prev]) + (value if isinstance(value, list) else [value])
        else:
            msg[key] = value
    if end is not None:
        raise ValueError(f"missing {end!r}")
    return msg, i


def parse_pbtxt(text: str) -> dict[str, Any]:
    msg, _ = _message(tokenize(text), 0, None)
    return msg
