"""Peak resident memory of the job process over one measurement.

Why not ``ru_maxrss``: it is the high-water mark of the whole process life, so every
step after the original would report the original's peak. On Linux the kernel's
high-water mark (``VmHWM``) is reset by writing ``5`` to ``/proc/self/clear_refs``
and read back afterwards: exact, and free. Elsewhere (or where /proc refuses) a
psutil thread samples the resident set every few milliseconds, which can miss a
short spike; the method used is recorded with the figure.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path
from types import TracebackType

_HWM = re.compile(r"VmHWM:\s+(\d+)\s*kB")
SAMPLE_S = 0.005


def rss_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - psutil missing or /proc restricted: the figure is left out
        return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _read_hwm() is not None
    except OSError:
        return False


def _read_hwm() -> int | None:
    try:
        m = _HWM.search(Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(m.group(1)) * 1024 if m else None


class PeakRSS:
    """``with PeakRSS() as mem: ...`` then ``mem.peak`` (bytes), ``mem.before`` and ``mem.method``."""

    def __init__(self) -> None:
        self.before: int | None = None
        self.peak: int | None = None
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampled = 0

    def __enter__(self) -> PeakRSS:
        self.before = rss_bytes()
        if _reset_hwm():
            self.method = "kernel high-water mark (VmHWM, reset before the measurement)"
            return self
        if self.before is None:
            return self
        self.method = f"resident set sampled every {SAMPLE_S * 1000:.0f} ms (psutil)"
        self._sampled = self.before
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            now = rss_bytes()
            if now is not None and now > self._sampled:
                self._sampled = now

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            now = rss_bytes() or 0
            self.peak = max(self._sampled, now)
        elif self.method:
            self.peak = _read_hwm()
