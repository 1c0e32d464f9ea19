"""Write several files as one unit: build them in a hidden folder, then move them in.

Why: an export is a model file plus maybe external data, and it is verified
before it becomes visible. Everything is written into a staging folder next to
the destination (same filesystem, so renames are atomic); only a verified,
complete set is renamed into place. Cancel, failure or a crash leaves at most
the hidden staging folder, which is removed on the way out.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from slimline.core.export.records import ExportError

STAGING_PREFIX = ".slimline-export-"


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory fds (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def refuse_existing(out_dir: Path, names: list[str], force: bool) -> None:
    """Raise when a destination file exists and ``force`` is not given."""
    if force:
        return
    taken = [n for n in names if (out_dir / n).exists()]
    if taken:
        raise ExportError(f"{', '.join(taken)} already exist(s) in the output folder", subject=str(out_dir),
                          hint="pass --force to overwrite (in the app: confirm overwriting), or choose another "
                               "output folder or --name")


class Staging:
    """``with Staging(out_dir) as st: write into st.dir …; st.commit(force)``.

    Leaving the block without ``commit`` (exception, cancel) deletes everything staged.
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)
        self.dir: Path = Path()
        self.committed: list[Path] = []

    def __enter__(self) -> "Staging":
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.out_dir))
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def files(self) -> list[Path]:
        return sorted(p for p in self.dir.rglob("*") if p.is_file())

    def commit(self, force: bool) -> list[Path]:
        """fsync every staged file, then rename each into ``out_dir`` (same relative path)."""
        staged = self.files()
        rel = [p.relative_to(self.dir) for p in staged]
        refuse_existing(self.out_dir, [r.as_posix() for r in rel], force)
        try:
            for p in staged:
                _fsync_file(p)
            for src, r in zip(staged, rel):
                dst = self.out_dir / r
                dst.parent.mkdir(parents=True, exist_ok=True)
                if dst.is_dir():
                    raise ExportError(f"{r} exists as a folder", subject=str(dst),
                                      hint="remove it or pick another --out")
                os.replace(src, dst)
                self.committed.append(dst)
            _fsync_dir(self.out_dir)
        except OSError as exc:  # disk full, read-only folder: no half export stays behind
            for done in self.committed:
                done.unlink(missing_ok=True)
            self.committed = []
            raise ExportError(f"could not write into the output folder ({exc.strerror or exc}); nothing was exported",
                              subject=str(self.out_dir),
                              hint="free disk space or choose a writable output folder, then export again") from None
        return self.committed
