# onnxruntime-genai (weight-only INT4 / model builder, when installed) loads its native library and
# its builder modules lazily: collect them all, with the package's shared libraries.
from PyInstaller.utils.hooks import collect_data_files, collect_dynamic_libs, collect_submodules

hiddenimports = collect_submodules("onnxruntime_genai")
binaries = collect_dynamic_libs("onnxruntime_genai")
datas = collect_data_files("onnxruntime_genai")
