"""Slimline's Qt-free engine.

Nothing here imports Qt, and heavy libraries (torch, onnxruntime, transformers)
are imported inside functions so that the CLI and the window start fast.
"""
__version__ = "0.1.0"
