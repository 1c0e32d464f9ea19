"""Opening real models: ONNX, TorchScript, torch.export, checkpoints, safetensors, HF folders.

Formats are detected by content. Nothing here imports torch/onnx/transformers at
module level; the per-format modules import them inside functions.
"""
from slimline.core.models.detect import detect_format
from slimline.core.models.loaders import load_eager_module, load_torch_runnable, open_model, to_slimline_archive
from slimline.core.models.onnx_files import load_onnx

__all__ = ["open_model", "detect_format", "load_onnx", "load_torch_runnable", "load_eager_module",
           "to_slimline_archive"]
