"""Built-in "Convert to ONNX" step: torch → ONNX via torch.onnx, verified by running both."""
from slimline.plugins.convert.plugin import ConvertToOnnx

__all__ = ["ConvertToOnnx"]
