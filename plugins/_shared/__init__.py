"""Helpers shared by the built-in plugins, so that no plugin imports another plugin.

``layers``: which layers a step touches (name patterns, cheap spec listings, pre-flight
problems); ``common``: torch model in/out and size reporting; ``onnxio``: ONNX in/out for
weight-editing steps. Nothing here imports torch or onnx at module level.
"""
