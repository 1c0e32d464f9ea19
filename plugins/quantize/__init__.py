"""ONNX quantization steps: dynamic INT8, static INT8 (QDQ), FP16 — verified, retried, explained."""
from slimline.plugins.quantize.dynamic import QuantizeDynamic
from slimline.plugins.quantize.fp16 import ConvertFp16
from slimline.plugins.quantize.static import QuantizeStatic

__all__ = ["QuantizeDynamic", "QuantizeStatic", "ConvertFp16"]
