"""The PySide6 6.12 / Python 3.11 None-refcount workaround keeps long sessions alive."""
from __future__ import annotations

import subprocess
import sys


def test_many_void_qt_calls_do_not_abort_the_process():
    code = ("import os; os.environ['QT_QPA_PLATFORM']='offscreen'\n"
            "import slimline.gui\n"
            "from PySide6.QtCore import QObject\n"
            "o = QObject()\n"
            "for _ in range(200000): o.setObjectName('x')\n"
            "print('alive')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "alive" in out.stdout
