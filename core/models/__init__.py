"""Opening real models: ONNX, TorchScript, torch.export, checkpoints, safetensors, HF folders, GGUF.

Formats are detected by content. Nothing here imports torch/onnx/transformers at
module level; the per-format modules import them inside functions.

Layers (imports only point down; tests/core/test_models_layering.py checks it):
  tensors, safe_paths, handles, memory  shared tensor primitives, handle helpers, memory estimates
  sniff, onnx_files, onnx_fold, torch_files, safetensors_files, hf, archive, gguf   per-format modules
  formats                               the table of formats
  detect, loaders, weights              dispatch through the table
"""
from slimline.core.models.detect import detect_format
from slimline.core.models.loaders import load_eager_module, load_torch_runnable, open_model, to_slimline_archive
from slimline.core.models.onnx_files import load_onnx
from slimline.core.models.onnx_fold import fold_constants_to_initializers

__all__ = ["open_model", "detect_format", "load_onnx", "load_torch_runnable", "load_eager_module",
           "to_slimline_archive", "fold_constants_to_initializers"]
