# Slimline finds its plugins through entry points (importlib.metadata), so the
# dist-info must travel with the app, and every plugin/GUI module must be collected
# even though nothing imports it statically.
from PyInstaller.utils.hooks import collect_data_files, collect_submodules, copy_metadata

datas = copy_metadata("slimline") + collect_data_files("slimline.resources")
hiddenimports = (collect_submodules("slimline.core") + collect_submodules("slimline.plugins")
                 + collect_submodules("slimline.gui") + ["torch_pruning"])
