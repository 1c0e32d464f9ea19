"""Files travel between machines by content hash.

A *unit* is what one path means: a model file with its companions (ONNX external data),
a model folder, a dataset file or folder, or the files a variant produced. It lists its
files with their SHA-256; the bytes travel once per hash (Ray's object store, or a shared
folder both sides can read), and a node materializes a unit once in its own cache
(``<root>/units/<key>/``), checked against the hashes and moved into place atomically,
so concurrent workers on one node never see a half-written model.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import BaseModel

from slimline.core.fsutil import atomic_write_bytes

CHUNK = 1 << 20
COMPLETE = ".complete"


class UnitFile(BaseModel):
    rel: str          # path inside the unit folder ("/"-separated)
    sha256: str
    size: int


class FileUnit(BaseModel):
    """Files under one folder, by content; ``main`` is what to open (a file or folder inside it)."""

    main: str
    files: list[UnitFile]

    @property
    def key(self) -> str:
        doc = json.dumps([[f.rel, f.sha256] for f in sorted(self.files, key=lambda f: f.rel)])
        return hashlib.sha256(doc.encode()).hexdigest()[:32]

    @property
    def nbytes(self) -> int:
        return sum(f.size for f in self.files)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def unit_of_files(root: Path, files: Iterable[Path], main: str = "") -> tuple[FileUnit, dict[str, Path]]:
    """A unit of ``files`` (all under ``root``) and {sha256: source path} to ship them from."""
    root = Path(root).resolve()
    entries, sources = [], {}
    for f in sorted({Path(f).resolve() for f in files}):
        rel = f.relative_to(root).as_posix()
        digest = sha256_file(f)
        entries.append(UnitFile(rel=rel, sha256=digest, size=f.stat().st_size))
        sources[digest] = f
    return FileUnit(main=main, files=entries), sources


def unit_of_path(path: str | Path, companions: Iterable[str | Path] = ()) -> tuple[FileUnit, dict[str, Path], Path]:
    """The unit a path means (a folder with everything in it, or a file plus its companion files),
    the sources of its blobs, and the folder the unit stands for (its files' common root)."""
    p = Path(path).resolve()
    if p.is_dir():
        files = [f for f in p.rglob("*") if f.is_file()]
        return (*unit_of_files(p.parent, files, main=p.name), p.parent)
    extra = [Path(c).resolve() for c in companions if Path(c).resolve() != p and Path(c).is_file()]
    root = Path(os.path.commonpath([p.parent, *(c.parent for c in extra)]))
    return (*unit_of_files(root, [p, *extra], main=p.relative_to(root).as_posix()), root)


def blob_path(shared: Path, digest: str) -> Path:
    return Path(shared) / "blobs" / digest[:2] / digest


def put_shared(shared: Path, sources: dict[str, Path]) -> None:
    """Copy each blob into the shared folder once (atomically; an existing blob is reused)."""
    for digest, src in sources.items():
        dest = blob_path(shared, digest)
        if dest.is_file() and dest.stat().st_size == src.stat().st_size:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def materialize(unit: FileUnit, root: Path, fetch: Callable[[str], bytes]) -> Path:
    """The unit's folder under ``root/units`` (built once per node); ``fetch(sha256)`` gives missing bytes."""
    final = Path(root) / "units" / unit.key
    if (final / COMPLETE).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{unit.key}-", dir=final.parent))
    try:
        for f in unit.files:
            data = fetch(f.sha256)
            if hashlib.sha256(data).hexdigest() != f.sha256:
                raise OSError(f"{f.rel}: the bytes received do not match their SHA-256 (corrupted in transfer)")
            dest = tmp / f.rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        (tmp / COMPLETE).write_text(unit.model_dump_json())
        try:
            os.replace(tmp, final)
        except OSError:  # another worker on this node built it meanwhile
            if not (final / COMPLETE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def write_unit(unit: FileUnit, dest: Path, fetch: Callable[[str], bytes]) -> None:
    """Write a unit's files under ``dest`` (results landing in the workspace), each atomically."""
    for f in unit.files:
        atomic_write_bytes(Path(dest) / f.rel, fetch(f.sha256))


def read_shared(shared: Path) -> Callable[[str], bytes]:
    return lambda digest: blob_path(shared, digest).read_bytes()
