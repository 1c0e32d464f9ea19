# The torch.export-based ONNX exporter inspects onnxscript functions' source code
# (inspect.getsource), so onnxscript must be shipped as .py files, not only bytecode.
from PyInstaller.utils.hooks import collect_data_files, collect_submodules

module_collection_mode = "pyz+py"
hiddenimports = collect_submodules("onnxscript")
datas = collect_data_files("onnxscript")
