"""Slimline desktop app (PySide6 + pyqtgraph) over the Qt-free engine in ``slimline.core``.

Heavy libraries (torch, onnxruntime, pyqtgraph) are imported inside functions so the
window opens fast; each view module runs alone with ``python -m slimline.gui.<view>``.
"""
