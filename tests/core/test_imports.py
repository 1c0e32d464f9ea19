"""Layering rules: the engine stays Qt-free and light to import."""
import json
import subprocess
import sys

HEAVY = ("torch", "onnxruntime", "PySide6", "transformers", "torch_pruning", "sklearn", "pyqtgraph")


def _imported_after(code: str) -> set[str]:
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_core_and_plugins_import_neither_qt_nor_torch():
    mods = _imported_after(
        "import slimline.core, slimline.core.pipeline, slimline.core.registry, slimline.core.jobs, "
        "slimline.core.runner, slimline.core.cli, slimline.core.models, slimline.core.stats, "
        "slimline.core.data, slimline.core.metrics, slimline.core.runtime\n"
        "import slimline.plugins, slimline.plugins.convert, slimline.plugins.quantize, "
        "slimline.plugins.prune, slimline.plugins.lowrank, slimline.plugins.distill")
    assert not {"PySide6", "torch", "shiboken6", "pyqtgraph"} & mods


def test_help_and_plugin_list_import_no_heavy_library():
    for args in (["--help"], ["plugins"], ["run", "--help"]):
        code = ("import sys\nfrom slimline.core.cli import main\nsys.argv=['slimline', *%r]\n"
                "try:\n    main(%r)\nexcept SystemExit:\n    pass" % (args, args))
        mods = _imported_after(code)
        assert not set(HEAVY) & mods, (args, set(HEAVY) & mods)


def test_no_qt_in_core_or_plugins_sources():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for folder in ("core", "plugins"):
        for py in (root / folder).rglob("*.py"):
            text = py.read_text()
            assert "import PySide6" not in text and "from PySide6" not in text, py
            assert "import pyqtgraph" not in text, py
