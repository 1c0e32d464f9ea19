"""Slimline desktop app (PySide6 + pyqtgraph) over the Qt-free engine in ``slimline.core``.

Heavy libraries (torch, onnxruntime, pyqtgraph) are imported inside functions so the
window opens fast; each view module runs alone with ``python -m slimline.gui.<view>``.
Importing this package applies :mod:`slimline.gui.qtfix` (a PySide6 6.12 refcount bug
on Python 3.11 that otherwise aborts the process after a few thousand Qt calls).
"""
from slimline.gui import qtfix as _qtfix

_qtfix.apply()
