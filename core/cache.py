"""Content-addressed step cache: re-running after editing step k recomputes from k only.

Key = hash(input model content, plugin id + version, canonical params, data
fingerprint, seed). An entry is a folder holding the step's output files and
``step.json``; it appears atomically (built under a temp name, then renamed),
so a cancelled or crashed step never leaves a half-entry behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from slimline.core.fsutil import atomic_write_text
from slimline.core.handle import ModelHandle

TMP_PREFIX = ".tmp-"


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def file_fingerprint(path: str | None) -> str:
    """Cheap identity of a dataset file or folder: path, size and mtime of its files."""
    if not path:
        return ""
    p = Path(path)
    items = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else []
    parts = [f"{x}:{x.stat().st_size}:{x.stat().st_mtime_ns}" for x in items[:10000]]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


CONTENT_HASH_MAX_BYTES = 256 << 20  # larger files are identified by path, size and mtime only


def content_fingerprint(path: str | os.PathLike[str] | None) -> str:
    """Identity of a file a step or the evaluation reads: its bytes (a folder: path, size and mtime of its files).

    Why content and not mtime: a text file edited and saved within the file system's timestamp
    granularity, or copied over with its old mtime, must still invalidate the step that read it.
    Files above ``CONTENT_HASH_MAX_BYTES`` fall back to :func:`file_fingerprint`.
    """
    if not path:
        return ""
    p = Path(path)
    if not p.is_file() or p.stat().st_size > CONTENT_HASH_MAX_BYTES:
        return file_fingerprint(str(p)) if p.exists() else f"missing:{p}"
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def step_key(input_hash: str, plugin_id: str, plugin_version: str, params: dict[str, Any],
             data_fingerprint: str, seed: int) -> str:
    payload = canonical({"in": input_hash, "plugin": plugin_id, "v": plugin_version,
                         "params": params, "data": data_fingerprint, "seed": seed})
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


class StepCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def entry(self, key: str) -> Path:
        return self.root / key

    def work_dir(self, key: str) -> Path:
        d = self.root / f"{TMP_PREFIX}{key}-{os.getpid()}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d

    def load(self, key: str) -> dict[str, Any] | None:
        meta = self.entry(key) / "step.json"
        if not meta.is_file():
            return None
        try:
            record = json.loads(meta.read_text())
            record["model"] = _rebase(record["model"], self.entry(key))
            if not all(Path(f).exists() for f in record["model"]["files"]):
                return None
            return record
        except (OSError, ValueError, KeyError):
            return None

    def commit(self, key: str, work_dir: Path, record: dict[str, Any], *, replace: bool = False
               ) -> dict[str, Any]:
        """Move a finished work dir into place and return the record with final paths.

        ``replace``: the step was recomputed on purpose (``--no-cache``), so its fresh output
        replaces an existing entry; otherwise an entry another run produced meanwhile is kept.
        """
        rel = dict(record)
        rel["model"] = _relativize(record["model"], work_dir)
        atomic_write_text(work_dir / "step.json", json.dumps(rel, indent=1, default=str))
        final = self.entry(key)
        if replace and final.exists():
            old = self.root / f"{TMP_PREFIX}{key}-old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)  # the entry is gone for a moment only, never half-written
            os.replace(work_dir, final)
            shutil.rmtree(old, ignore_errors=True)
        elif final.exists():  # another run produced it meanwhile: keep theirs
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            try:
                os.replace(work_dir, final)
            except OSError:  # lost a race with a concurrent run (a sweep's variants share prefixes)
                if not (final / "step.json").is_file():
                    raise
                shutil.rmtree(work_dir, ignore_errors=True)
        out = self.load(key)
        assert out is not None
        return out

    def save_eval(self, key: str, eval_key: str, result: dict[str, Any]) -> None:
        atomic_write_text(self.root / key / f"eval-{eval_key}.json", json.dumps(result, default=str))

    def load_eval(self, key: str, eval_key: str) -> dict[str, Any] | None:
        p = self.root / key / f"eval-{eval_key}.json"
        try:
            return json.loads(p.read_text()) if p.is_file() else None
        except (OSError, ValueError):
            return None

    def clean_temp(self, pid: int | None = None) -> int:
        """Remove work dirs left by a cancelled or crashed step (of ``pid`` or of any process)."""
        n = 0
        for d in self.root.glob(f"{TMP_PREFIX}*"):
            if pid is None or d.name.endswith(f"-{pid}"):
                shutil.rmtree(d, ignore_errors=True)
                n += 1
        return n


def _relativize(model: dict[str, Any], base: Path) -> dict[str, Any]:
    def rel(p: str) -> str:
        try:
            return str(Path(p).resolve().relative_to(base.resolve()))
        except ValueError:
            return p
    return {**model, "path": rel(model["path"]), "files": [rel(f) for f in model.get("files", [])]}


def _rebase(model: dict[str, Any], base: Path) -> dict[str, Any]:
    def absolute(p: str) -> str:
        return p if Path(p).is_absolute() else str(base / p)
    return {**model, "path": absolute(model["path"]), "files": [absolute(f) for f in model.get("files", [])]}


def handle_from_record(record: dict[str, Any]) -> ModelHandle:
    return ModelHandle.model_validate(record["model"])
