# onnxruntime.transformers' modules import each other by bare name (`from fusion_utils import ...`):
# its __init__ appends its own folder to sys.path. onnxruntime.quantization's pre-processing (static
# INT8) and FP16 conversion reach them, so the folder must hold real .py files inside the bundle too
# ("pyz+py": bytecode for the dotted names, sources on disk for the bare ones). Which submodules are
# collected is decided by the selfcheck module list (slimline.gui.selfcheck.LAZY_PACKAGES).
module_collection_mode = "pyz+py"
