"""Helpers for the fault suite: folder snapshots and step-cache consistency."""
from __future__ import annotations

import os
from pathlib import Path


def snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if any(Path(dirpath).is_relative_to(s) for s in skip):
            continue
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            if any(p.is_relative_to(s) for s in skip):
                continue
            st = p.lstat()
            out[str(p)] = (st.st_mtime_ns, st.st_size)
    return out


def cache_is_consistent(cache: Path) -> list[str]:
    """Problems with a step cache: leftover temp dirs, entries without step.json or their files."""
    import json

    problems = []
    if not cache.exists():
        return problems
    for d in cache.iterdir():
        if d.name.startswith(".tmp-"):
            problems.append(f"temp dir left: {d.name}")
            continue
        if not d.is_dir():
            continue
        meta = d / "step.json"
        if not meta.is_file():
            problems.append(f"entry without step.json: {d.name}")
            continue
        rec = json.loads(meta.read_text())
        for f in rec["model"]["files"]:
            if not (d / f).exists() and not Path(f).exists():
                problems.append(f"entry {d.name} misses {f}")
        leftovers = [p.name for p in d.rglob("*") if p.name.endswith(".tmp") or p.name == "partial.bin"]
        if leftovers:
            problems.append(f"entry {d.name} holds partial files {leftovers}")
    return problems
