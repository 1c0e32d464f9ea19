"""What the bundle leaves out: one place for the spec (PyInstaller) and build_bundle.sh (the selfcheck list).

Two kinds of cuts, each with the reason it is safe:
- EXCLUDES: Python packages PyInstaller must not follow. The selfcheck module list is built with the
  same packages blocked, so a module that needs one of them is reported as left out at build time.
- CUT_FILES: collected files the app never opens (test binaries, translations, Qt plugins for
  hardware/back-ends a desktop app does not use). Shared libraries that only a cut file needed are
  dropped with it (``orphaned_libraries``), never one that a kept binary still links to.

    python installers/bundle_config.py excludes    # comma-separated EXCLUDES (for build_bundle.sh)
"""
from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Iterable

WITH_HF = os.environ.get("SLIMLINE_BUNDLE_HF") == "1"

# tkinter/matplotlib/IPython: never used. sklearn/scipy: only re-training the demo needs them.
# Development tools that arrive through the environment: pytest and its plugins, mypy (compiled: 4 MB).
EXCLUDES = ["tkinter", "matplotlib", "IPython", "sklearn", "scipy", "PyInstaller",
            "pytest", "_pytest", "pytestqt", "pluggy", "iniconfig", "hypothesis",
            "mypy", "mypyc", "librt", "ast_serialize",
            # the Ray engine is an optional extra (pip install slimline[ray]): hundreds of MB, its own
            # binaries; the bundle's sweeps run on the local engine and `selfcheck` says Ray is left out
            "ray",
            # Qt modules the app and pyqtgraph do not need (pyqtgraph imports QtTest/QtSvg in try/except)
            "PySide6.QtNetwork", "PySide6.QtTest", "PySide6.QtDBus"]
if not WITH_HF:
    EXCLUDES += ["transformers", "tokenizers"]

# Destination paths inside the bundle (relative to _internal/), fnmatch patterns.
CUT_FILES = [
    # torch: C++ test binaries, protoc, test-only libraries; the test suite's sources
    "torch/test/*", "torch/bin/*Test", "torch/bin/test_*", "torch/bin/protoc*", "torch/bin/*.pt",
    "torch/bin/*.ptl", "torch/lib/lib*test*.so", "torch/lib/libbackend_with_compiler.so",
    "torch/lib/libaoti_custom_ops.so", "torch/testing/_internal/*",
    "*/tests/*",
    # Qt: translations (the app is English), plugins for back-ends a desktop app never loads
    "PySide6/Qt/translations/*",
    "PySide6/Qt/plugins/platformthemes/libqgtk3.so",       # pulls in GTK's cairo/pango/atk stack
    "PySide6/Qt/plugins/egldeviceintegrations/*", "PySide6/Qt/plugins/platforms/libqeglfs.so",
    "PySide6/Qt/plugins/platforms/libqlinuxfb.so", "PySide6/Qt/plugins/platforms/libqvnc.so",
    "PySide6/Qt/plugins/platforms/libqvkkhrdisplay.so", "PySide6/Qt/plugins/platforms/libqminimalegl.so",
    "PySide6/Qt/plugins/generic/*", "PySide6/Qt/plugins/networkinformation/*", "PySide6/Qt/plugins/tls/*",
    "libQt6EglFSDeviceIntegration.so.*", "libQt6EglFsKmsSupport.so.*",
    "PySide6/Qt/lib/libQt6EglFSDeviceIntegration.so.*", "PySide6/Qt/lib/libQt6EglFsKmsSupport.so.*",
    # Pillow: AVIF codec (4.8 MB with its library) and the Tk bridge (tkinter is excluded)
    "PIL/_avif.*.so", "PIL/_imagingtk.*.so",
    # metadata of development tools
    "hypothesis-*.dist-info/*", "pluggy-*.dist-info/*",
]
# Kept although unreferenced: the bootloader loads libpython with dlopen.
NEVER_ORPHAN = ("libpython",)


def is_cut(dest: str) -> bool:
    dest = dest.replace(os.sep, "/")
    return any(fnmatch.fnmatch(dest, pat) for pat in CUT_FILES)


def orphaned_libraries(cut: Iterable[tuple[str, str]], kept: Iterable[tuple[str, str]]) -> set[str]:
    """Top-level shared libraries (dest names) that only cut binaries link to.

    ``cut``/``kept`` are (dest, source path) pairs of ELF binaries. Uses PyInstaller's ldd-based
    import scan, which is transitive, so a library a kept binary needs indirectly stays too.
    """
    from PyInstaller.depend.bindepend import get_imports

    def needed(items: Iterable[tuple[str, str]]) -> set[str]:
        names: set[str] = set()
        for _dest, src in items:
            try:
                names |= {name for name, _path in get_imports(src)}
            except Exception:  # noqa: BLE001 - not an ELF file (a data file named .so*): needs nothing
                continue
        return names

    candidates = {n for n in needed(cut) if not n.startswith(NEVER_ORPHAN)}
    if not candidates:
        return set()
    return candidates - needed(kept)


if __name__ == "__main__":
    if sys.argv[1:] == ["excludes"]:
        print(",".join(EXCLUDES))
    else:
        sys.exit("usage: bundle_config.py excludes")
