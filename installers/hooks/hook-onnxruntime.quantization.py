# Quantization imports parts of itself and of onnxruntime.tools inside functions (the symbolic shape
# inference of quant_pre_process, calibrators, operator registries): collect both packages whole.
# (The selfcheck module list adds the same modules; this hook keeps a plain PyInstaller run correct.)
from PyInstaller.utils.hooks import collect_submodules

hiddenimports = collect_submodules("onnxruntime.quantization") + collect_submodules(
    "onnxruntime.tools", filter=lambda name: not name.startswith(("onnxruntime.tools.qnn",
                                                                 "onnxruntime.tools.mobile_helpers")))
