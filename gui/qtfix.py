"""Work around a PySide6 6.12 reference-count bug on Python < 3.12.

Measured here (PySide6/shiboken6 6.12.0, CPython 3.11): every call of a Qt
method that returns void decrements the reference count of ``None`` once more
than it should (``QObject.setObjectName`` 100× → refcount −100). CPython 3.12+
makes None immortal, so the bug is harmless there — the wheels appear to be
built for that assumption. On 3.11 the count reaches zero after a few thousand
calls and the interpreter aborts with "none_dealloc: deallocating None" — in
practice while pyqtgraph repaints charts during a run.

The fix gives None the same immortality 3.12 gives it: a very large reference
count, set once at import, only when the leak is actually detected.
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


def apply() -> bool:
    """Pin None's refcount if needed; returns True when the fix was applied (idempotent)."""
    global _applied
    if _applied or sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return _applied
    if leaks_none():
        import ctypes

        ctypes.c_ssize_t.from_address(id(None)).value += PIN
        _applied = True
    return _applied
