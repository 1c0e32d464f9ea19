"""`slimline selfcheck` (hidden): import every module the app can reach and report the ones that fail.

Why: the packaged app (installers/) only holds the modules PyInstaller saw. Plugins import their
libraries inside functions, and those libraries import more by name at run time (onnxruntime's
quantization pre-processing pulls in its transformer-fusion tools by bare module name), so a
module missing from the bundle used to surface only in a user's run. This check makes it fail
at build/test time instead.

The modules checked ("reachable"):
- every module of the slimline package (core, plugins, gui, resources);
- every absolute import written anywhere in slimline's sources (found with ``ast``, so imports
  inside functions count), except the standard library;
- every submodule of the packages in :data:`LAZY_PACKAGES`: libraries the plugins reach and that
  load parts of themselves lazily.

``--list`` (run by installers/build_bundle.sh with the build interpreter) writes the modules that
import in the development install, with the bundle's excluded packages blocked, as JSON; the
bundle build collects exactly those as hidden imports and ships the file, and ``selfcheck`` inside
the frozen app imports each of them. Outside a bundle it computes the list and imports it.
Usage: ``slimline selfcheck [--json]`` (or ``python -m slimline.gui.selfcheck``); exit 1 on failures.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import json
import os
import pkgutil
import sys
import time
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SLIMLINE_PACKAGES = ("slimline.core", "slimline.plugins", "slimline.gui", "slimline.resources")
# (package, submodule prefixes left out): libraries the plugins reach that import parts of themselves
# lazily or by name. Prefixes left out are example/benchmark code for other model families.
LAZY_PACKAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("onnxruntime.quantization", ()),
    ("onnxruntime.tools", ("onnxruntime.tools.qnn", "onnxruntime.tools.mobile_helpers",  # ORT-mobile
                           "onnxruntime.tools.ort_format_model", "onnxruntime.tools.convert_onnx_models_to_ort")),
    ("onnxruntime.transformers", ("onnxruntime.transformers.models",)),
    ("torch.onnx", ()),
    ("onnxscript", ()),
    ("onnx_ir", ()),
    ("torch_pruning", ()),
    ("onnxruntime_genai", ()),
)
LIST_FILE = "selfcheck_modules.json"  # next to the frozen app's modules (sys._MEIPASS)
# Optional extras the app runs without: reported when missing, never a failure.
OPTIONAL = {"ray": "the Ray engine for sweeps on a cluster (pip install slimline[ray]; the desktop bundle leaves it "
                   "out, its sweeps run on the local process pool)"}


def slimline_modules() -> list[str]:
    """Every module of the slimline package (imports the packages, not the leaves)."""
    names: list[str] = []
    for pkg_name in SLIMLINE_PACKAGES:
        pkg = importlib.import_module(pkg_name)
        names.append(pkg_name)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg_name + ".")]
    return sorted(set(names))


def imports_in_source(source: str) -> set[str]:
    """Absolute module names a source file imports, at any depth (``from a import b`` gives a and a.b)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def _is_module(name: str) -> bool:
    """True if ``name`` is an importable module (``from a import b`` may name a function, not a module)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError, AttributeError):
        return False


def third_party_imports(modules: Iterable[str]) -> set[str]:
    """Non-stdlib, non-slimline modules imported anywhere in the given slimline modules' sources."""
    names: set[str] = set()
    for mod in modules:
        spec = importlib.util.find_spec(mod)
        origin = getattr(spec, "origin", None)
        if not origin or not origin.endswith(".py") or not os.path.isfile(origin):
            continue
        names |= imports_in_source(Path(origin).read_text(encoding="utf-8"))
    stdlib = set(sys.stdlib_module_names)
    keep = {n for n in names if n.split(".")[0] not in stdlib and not n.startswith("slimline")
            and n.split(".")[0] != "__future__"}
    return {n for n in keep if "." not in n or _is_module(n)}


def lazy_package_modules() -> set[str]:
    """Submodules of :data:`LAZY_PACKAGES` that are installed (a missing package contributes nothing)."""
    names: set[str] = set()
    for pkg_name, skip in LAZY_PACKAGES:
        if not _is_module(pkg_name):
            continue
        try:
            pkg = importlib.import_module(pkg_name)
        except Exception:  # noqa: BLE001 - reported when the module list is imported
            names.add(pkg_name)
            continue
        names.add(pkg_name)
        for m in pkgutil.walk_packages(getattr(pkg, "__path__", []), pkg_name + ".", onerror=lambda _n: None):
            if not any(m.name == s or m.name.startswith(s + ".") for s in skip):
                names.add(m.name)
    return names


class _Blocker:
    """A meta-path finder that makes excluded top-level packages unimportable (as in the bundle)."""

    def __init__(self, excluded: Iterable[str]) -> None:
        self.excluded = set(excluded)

    def blocks(self, name: str) -> bool:
        """``name`` is excluded or inside an excluded package (``PySide6.QtTest`` blocks only that module)."""
        return any(name == ex or name.startswith(ex + ".") for ex in self.excluded)

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if self.blocks(name):
            raise ModuleNotFoundError(f"No module named {name!r} (excluded from the bundle)", name=name)
        return None


def import_all(modules: Sequence[str]) -> dict[str, str]:
    """Import each module; returns {module: error} for the ones that fail."""
    failures: dict[str, str] = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 - SystemExit from a script module counts too
            failures[name] = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]
            if os.environ.get("SLIMLINE_SELFCHECK_TRACE"):
                traceback.print_exc()
    return failures


def reachable_modules() -> list[str]:
    """The modules the app can reach, computed from this installation (not in a frozen app)."""
    own = slimline_modules()
    return sorted(set(own) | third_party_imports(own) | lazy_package_modules())


def frozen_list_path() -> Path | None:
    """The module list shipped inside a frozen app, if this is one."""
    base = getattr(sys, "_MEIPASS", None)
    return Path(base) / LIST_FILE if base else None


def build_list(excluded: Iterable[str]) -> dict[str, Any]:
    """What a bundle must be able to import: the reachable modules that import here with ``excluded`` blocked.

    Run it in a fresh interpreter (``--list``): a module this process imported already cannot be blocked.
    """
    excluded = sorted(set(excluded))
    blocker = _Blocker(excluded)
    sys.meta_path.insert(0, blocker)  # before anything is imported: a cached module would pass the check
    try:
        modules = [m for m in reachable_modules() if not blocker.blocks(m)]
        failures = import_all(modules)
    finally:
        sys.meta_path.remove(blocker)
    return {"excluded": excluded, "modules": [m for m in modules if m not in failures], "not_bundled": failures}


def add_parser(sub: Any) -> None:
    """Add the hidden `selfcheck` subcommand (no help line: it is for packagers and tests)."""
    s = sub.add_parser("selfcheck", description="Import every module the app can reach; exit 1 if one fails.")
    _arguments(s)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable result")
    p.add_argument("--list", metavar="FILE", help="write the importable module list (bundle build) and exit")
    p.add_argument("--exclude", default="", help="comma-separated top-level packages the bundle leaves out")
    p.add_argument("--modules", metavar="FILE", help="check the modules of this list file instead")


def cmd_selfcheck(args: argparse.Namespace) -> int:
    """Import the module list (the shipped one inside a bundle) and report failures."""
    excluded = [x for x in args.exclude.split(",") if x]
    t0 = time.perf_counter()
    if args.list:
        listing = build_list(excluded)
        Path(args.list).write_text(json.dumps(listing, indent=1), encoding="utf-8")
        print(f"selfcheck: {len(listing['modules'])} modules listed, {len(listing['not_bundled'])} left out "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        return 0
    list_file = Path(args.modules) if args.modules else frozen_list_path()
    if list_file is not None and list_file.is_file():
        modules = json.loads(list_file.read_text(encoding="utf-8"))["modules"]
        source = str(list_file)
    else:
        modules, source = reachable_modules(), "this installation"
    failures = import_all(modules)
    optional = {name: why for name, why in OPTIONAL.items() if not _is_module(name)}
    result = {"checked": len(modules), "failed": failures, "source": source, "optional_missing": optional,
              "seconds": round(time.perf_counter() - t0, 1)}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for name, err in sorted(failures.items()):
            print(f"FAIL {name}: {err}")
        for name, why in sorted(optional.items()):
            print(f"optional, not installed: {name} — {why}")
        print(f"selfcheck: {len(modules) - len(failures)}/{len(modules)} modules import ({source}, "
              f"{result['seconds']} s)")
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="slimline selfcheck", description=__doc__.splitlines()[0] if __doc__ else None)
    _arguments(p)
    return cmd_selfcheck(p.parse_args(argv))


if __name__ == "__main__":  # python -m slimline.gui.selfcheck
    sys.exit(main())
