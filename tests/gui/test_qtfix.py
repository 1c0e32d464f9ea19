"""The PySide6 6.12 / Python 3.11 refcount workarounds keep long sessions alive."""
from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import os; os.environ['QT_QPA_PLATFORM']='offscreen'\n" + code],
                          capture_output=True, text=True, timeout=120)


def test_many_void_qt_calls_do_not_abort_the_process():
    out = _run("import slimline.gui\n"
               "from PySide6.QtCore import QObject\n"
               "o = QObject()\n"
               "for _ in range(200000): o.setObjectName('x')\n"
               "print('alive')\n")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "alive" in out.stdout


def test_slots_returning_bools_do_not_abort_the_process():
    """pyqtgraph's slots return bools on every repaint; a live chart died after ~300 updates."""
    out = _run("import slimline.gui\n"
               "from PySide6.QtCore import QObject, Signal\n"
               "class S(QObject):\n"
               "    fired = Signal()\n"
               "s = S()\n"
               "s.fired.connect(lambda: True)\n"
               "s.fired.connect(lambda: False)\n"
               "for _ in range(100000): s.fired.emit()\n"
               "print('alive')\n")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "alive" in out.stdout
