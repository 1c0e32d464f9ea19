"""Work around PySide6 6.12 reference-count bugs on Python < 3.12.

Measured here (PySide6/shiboken6 6.12.0, CPython 3.11):

- every call of a Qt method that returns void decrements the reference count of
  ``None`` once more than it should (``QObject.setObjectName`` 100× → refcount −100);
- every time a signal calls a Python slot, the slot's result is turned into a
  bool and ``True`` or ``False`` loses a reference (a slot returning ``True``,
  emitted 50× → refcount of True −50). pyqtgraph's own slots do this on every
  repaint, so a live chart aborted the process with "bool_dealloc" after about
  300 updates, or at exit.

CPython 3.12+ makes None, True and False immortal, so the bugs are harmless
there — the wheels appear to be built for that assumption. On 3.11 a count
reaches zero and the interpreter aborts ("none_dealloc"/"bool_dealloc"). The
fix gives these three singletons the immortality 3.12 gives them: a very large
reference count, set once at import, only when a leak is actually detected.
"""
from __future__ import annotations

import sys

PIN = 1 << 40
_applied = False


def leaks_none() -> bool:
    """True when a void Qt call loses a reference to None."""
    from PySide6.QtCore import QObject

    obj = QObject()
    before = sys.getrefcount(None)
    for _ in range(8):
        obj.setObjectName("probe")
    return sys.getrefcount(None) - before <= -8


def leaks_bool() -> bool:
    """True when a signal calling a Python slot loses a reference to the slot's (bool) result."""
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        fired = Signal()

    probe = _Probe()
    probe.fired.connect(lambda: True)
    before = sys.getrefcount(True)
    for _ in range(8):
        probe.fired.emit()
    return sys.getrefcount(True) - before <= -8


def _pin(obj: object) -> None:
    import ctypes

    ctypes.c_ssize_t.from_address(id(obj)).value += PIN


def known_unaffected() -> bool:
    """True when the installed shiboken6 predates 6.12 (no leak), read from package metadata.

    Asking the metadata instead of probing keeps `import slimline.gui` free of Qt, so the
    `slimline` launcher (slimline.gui.launcher) starts headless subcommands without PySide6.
    Unknown versions (a frozen bundle without metadata) are probed.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        parts = version("shiboken6").split(".")[:2]
        return (int(parts[0]), int(parts[1])) < (6, 12)
    except (PackageNotFoundError, ValueError, IndexError):
        return False


def apply() -> bool:
    """Pin the singletons' refcounts if needed; True when the fix was applied (idempotent)."""
    global _applied
    if _applied or sys.version_info >= (3, 12) or sys.implementation.name != "cpython" or known_unaffected():
        return _applied
    none_leak = leaks_none()
    bool_leak = leaks_bool()
    if none_leak or bool_leak:
        for obj in (None, True, False):  # the same bug family: pin all three
            _pin(obj)
        _applied = True
    return _applied
