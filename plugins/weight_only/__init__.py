"""Weight-only quantization of ONNX language models: MatMulNBits INT4/INT8, checked by perplexity."""
from slimline.plugins.weight_only.plugin import QuantizeWeightOnly

__all__ = ["QuantizeWeightOnly"]
