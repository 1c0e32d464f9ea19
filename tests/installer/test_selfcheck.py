"""Fast checks of what the bundle build relies on: the selfcheck module list, the cut rules, the python front."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from slimline.gui import selfcheck

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_imports_in_source_finds_imports_inside_functions():
    src = "import os\ndef f():\n    from onnxruntime.quantization import quantize_static\n    import torch.nn as nn\n" \
          "from . import x\n"
    found = selfcheck.imports_in_source(src)
    assert {"os", "onnxruntime.quantization", "onnxruntime.quantization.quantize_static", "torch.nn"} <= found
    assert not any(n.startswith(".") or n == "x" for n in found)


def test_blocker_blocks_a_package_or_one_submodule_only():
    b = selfcheck._Blocker(["transformers", "PySide6.QtTest"])
    assert b.blocks("transformers") and b.blocks("transformers.models.bert")
    assert b.blocks("PySide6.QtTest") and not b.blocks("PySide6.QtCore") and not b.blocks("transformers_x")


def test_build_list_holds_what_the_plugins_reach_and_respects_exclusions(tmp_path):
    # in a fresh interpreter, as the build does: a module this process already imported cannot be blocked
    out = tmp_path / "list.json"
    subprocess.run([sys.executable, "-m", "slimline.gui.selfcheck", "--list", str(out), "--exclude",
                    "transformers,tokenizers"], check=True, capture_output=True, timeout=600)
    listing = json.loads(out.read_text(encoding="utf-8"))
    mods = set(listing["modules"])
    # static INT8's pre-processing and FP16 reach these by name (the bundle once lacked them)
    assert {"onnxruntime.quantization.shape_inference", "onnxruntime.transformers.onnx_utils",
            "onnxruntime.transformers.float16", "onnxruntime.tools.symbolic_shape_infer"} <= mods
    assert {"slimline.plugins.quantize.static", "slimline.plugins.distill.trainer", "slimline.gui.selfcheck",
            "torch_pruning", "onnxscript"} <= mods
    assert not [m for m in mods if m.split(".")[0] in ("transformers", "tokenizers")]
    # a module that needs an excluded package is reported, not listed
    assert "onnxruntime.transformers.onnx_exporter" in listing["not_bundled"]
    assert "transformers" in listing["not_bundled"]["onnxruntime.transformers.onnx_exporter"]


def test_selfcheck_reports_a_module_that_does_not_import(tmp_path):
    lst = tmp_path / "modules.json"
    lst.write_text('{"modules": ["json", "slimline_no_such_module_xyz"]}', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "slimline.gui.selfcheck", "--modules", str(lst)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "FAIL slimline_no_such_module_xyz: ModuleNotFoundError" in proc.stdout
    assert "1/2 modules import" in proc.stdout


@pytest.mark.parametrize(("dest", "cut"), [
    ("torch/bin/test_api", True), ("torch/bin/FileStoreTest", True), ("torch/bin/protoc-3.13.0.0", True),
    ("torch/test/Dict_test", True), ("torch/lib/libtorchbind_test.so", True),
    ("PySide6/Qt/translations/qtbase_de.qm", True), ("PySide6/Qt/plugins/platformthemes/libqgtk3.so", True),
    ("torch/bin/torch_shm_manager", False), ("torch/lib/libtorch_cpu.so", False), ("torch/testing/__init__.py", False),
    ("PySide6/Qt/plugins/platforms/libqxcb.so", False), ("PySide6/Qt/plugins/platforms/libqoffscreen.so", False),
    ("PySide6/Qt/plugins/platforms/libqwayland.so", False), ("onnxruntime/transformers/fusion_utils.py", False),
])
def test_cut_rules(dest, cut):
    config = _load("bundle_config", ROOT / "installers" / "bundle_config.py")
    assert config.is_cut(dest) is cut


def test_bundle_entry_runs_scripts_and_code_like_python(tmp_path, capsys, monkeypatch):
    main = _load("slimline_main", ROOT / "installers" / "slimline_main.py")
    script = tmp_path / "hello.py"
    script.write_text("import sys\nprint('hello', sys.argv[1:])\n", encoding="utf-8")
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    assert main.run_like_python([str(script), "a", "b"]) == 0
    assert main.run_like_python(["-u", "-c", "import sys; print('code', sys.argv[1:])", "z"]) == 0
    assert capsys.readouterr().out == "hello ['a', 'b']\ncode ['z']\n"
    assert main.run_like_python(["inspect", "model.onnx"]) is None
    assert main.run_like_python([]) is None
    assert main.run_like_python(["missing.py"]) is None  # not a file: left to the launcher (a model path)
