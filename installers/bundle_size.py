"""What a one-folder bundle is made of: bytes by package, as a Markdown table (installers/README.md).

    python installers/bundle_size.py dist/slimline [--json sizes.json] [--top 25]
    python installers/bundle_size.py --compare before.json after.json   # before/after by package

Files under ``_internal/<pkg>/`` count for ``<pkg>`` (``numpy.libs`` for numpy, ``pillow.libs`` for
PIL); shared libraries copied to ``_internal/`` itself count for Qt (libQt6*, libicu*), Python
(libpython, base_library.zip) or "system libraries"; the Python bytecode archive (PYZ) appended to
the executable is split by top-level package. Needs PyInstaller (the build interpreter) for the PYZ.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

ALIASES = {"numpy.libs": "numpy", "pillow.libs": "PIL", "shiboken6": "PySide6", "python3.11": "python",
           "torch.libs": "torch", "onnxruntime.libs": "onnxruntime"}


def _root_file_group(name: str) -> str:
    if name.startswith(("libQt6", "libicu")):
        return "PySide6"
    if name.startswith("libpython") or name == "base_library.zip":
        return "python"
    return "system libraries"


def pyz_sizes(exe: Path) -> tuple[Counter[str], int]:
    """Compressed bytes per top-level package inside the PYZ appended to ``exe`` (and the PYZ's size)."""
    from PyInstaller.archive.readers import CArchiveReader
    from PyInstaller.loader.pyimod01_archive import ZlibArchiveReader

    pkg = CArchiveReader(str(exe))
    sizes: Counter[str] = Counter()
    pyz_name = next(n for n, e in pkg.toc.items() if e[-1] == "z")
    total = pkg.toc[pyz_name][1]
    data = pkg.extract(pyz_name)
    tmp = exe.parent.parent / (exe.name + ".pyz.tmp") if os.access(exe.parent.parent, os.W_OK) else None
    path = tmp or Path(os.environ.get("TMPDIR", "/tmp")) / "slimline-bundle-size.pyz"
    path.write_bytes(data)
    try:
        for name, entry in ZlibArchiveReader(str(path)).toc.items():
            sizes[ALIASES.get(name.split(".")[0], name.split(".")[0])] += entry[-1]
    finally:
        path.unlink()
    return sizes, total


def measure(bundle: Path) -> dict[str, dict[str, int]]:
    """{package: {"files": bytes on disk, "pyz": compressed bytecode bytes}} for a bundle folder."""
    internal = bundle / "_internal"
    out: dict[str, dict[str, int]] = {}

    def add(group: str, kind: str, n: int) -> None:
        out.setdefault(group, {"files": 0, "pyz": 0})[kind] += n

    for root, _dirs, files in os.walk(internal):
        rel = Path(root).relative_to(internal)
        for f in files:
            p = Path(root) / f
            if p.is_symlink():
                continue
            n = p.stat().st_size
            if rel == Path("."):
                add(_root_file_group(f), "files", n)
            else:
                top = rel.parts[0]
                group = "metadata (dist-info)" if top.endswith(".dist-info") else ALIASES.get(top, top)
                add(group, "files", n)
    exe = bundle / "slimline"
    try:
        sizes, pyz_total = pyz_sizes(exe)
        for name, n in sizes.items():
            add(name, "pyz", n)
        add("launcher (bootloader)", "files", exe.stat().st_size - pyz_total)
    except ImportError:
        add("executable (PYZ not split: PyInstaller missing)", "files", exe.stat().st_size)
    for extra in bundle.iterdir():
        if extra.is_file() and extra.name != "slimline":
            add("desktop file, icons", "files", extra.stat().st_size)
    return out


def table(sizes: dict[str, dict[str, int]], top: int = 20) -> str:
    """Markdown table, biggest first; the rest summed in one row."""
    rows = sorted(sizes.items(), key=lambda kv: -(kv[1]["files"] + kv[1]["pyz"]))
    total = sum(v["files"] + v["pyz"] for v in sizes.values())
    mb = lambda n: f"{n / 1e6:,.1f}"
    lines = ["| package | files MB | bytecode (PYZ) MB | total MB |", "|---|---:|---:|---:|"]
    for name, v in rows[:top]:
        lines.append(f"| {name} | {mb(v['files'])} | {mb(v['pyz'])} | {mb(v['files'] + v['pyz'])} |")
    rest = rows[top:]
    if rest:
        f, z = sum(v["files"] for _, v in rest), sum(v["pyz"] for _, v in rest)
        lines.append(f"| {len(rest)} others | {mb(f)} | {mb(z)} | {mb(f + z)} |")
    lines.append(f"| **total** | | | **{mb(total)}** |")
    return "\n".join(lines)


def compare(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], top: int = 20) -> str:
    """Markdown table of two measurements by package (MB, files + bytecode), biggest first."""
    tot = lambda d, k: sum(d.get(k, {}).values())
    keys = sorted(set(before) | set(after), key=lambda k: -max(tot(before, k), tot(after, k)))
    lines = ["| package | before MB | after MB | cut MB |", "|---|---:|---:|---:|"]
    shown = keys[:top] + [k for k in keys[top:] if tot(before, k) - tot(after, k) > 100_000]
    for k in shown:
        b, a = tot(before, k), tot(after, k)
        lines.append(f"| {k} | {b / 1e6:,.1f} | {a / 1e6:,.1f} | {(b - a) / 1e6:,.1f} |")
    rest = [k for k in keys if k not in shown]
    if rest:
        b, a = sum(tot(before, k) for k in rest), sum(tot(after, k) for k in rest)
        lines.append(f"| {len(rest)} others | {b / 1e6:,.1f} | {a / 1e6:,.1f} | {(b - a) / 1e6:,.1f} |")
    b, a = sum(tot(before, k) for k in keys), sum(tot(after, k) for k in keys)
    lines.append(f"| **total** | **{b / 1e6:,.1f}** | **{a / 1e6:,.1f}** | **{(b - a) / 1e6:,.1f}** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path, nargs="?")
    p.add_argument("--json", type=Path, help="also write the sizes as JSON")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"), help="two --json files")
    args = p.parse_args(argv)
    if args.compare:
        load = lambda f: json.loads(f.read_text(encoding="utf-8"))
        print(compare(load(args.compare[0]), load(args.compare[1]), args.top))
        return 0
    if args.bundle is None:
        p.error("give a bundle folder or --compare BEFORE AFTER")
    sizes = measure(args.bundle)
    print(table(sizes, args.top))
    if args.json:
        args.json.write_text(json.dumps(sizes, indent=1, sort_keys=True), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
