"""slimline.core.models keeps an acyclic, layered import graph (function-level imports included).

The package once had detect/hf/loaders/onnx_files/torch_files/weights importing each other in
a circle through imports hidden inside functions; this parses every import with ast so such a
cycle (or an upward import across the declared layers) fails here instead of at run time.
"""
from __future__ import annotations

import ast
from pathlib import Path

PKG = "slimline.core.models"
FOLDER = Path(__file__).resolve().parents[2] / "core" / "models"
# lower number = lower layer; a module may import only its own layer or below
LAYERS = {
    "tensors": 0, "safe_paths": 0, "handles": 0, "memory": 0,
    "sniff": 1, "onnx_files": 1, "onnx_fold": 1, "torch_files": 1, "safetensors_files": 1, "hf": 1, "archive": 1,
    "gguf": 1,
    "formats": 2,
    "detect": 3, "loaders": 3, "weights": 3,
    "__init__": 4,
}


def _modules() -> dict[str, Path]:
    return {p.stem: p for p in sorted(FOLDER.glob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Sibling modules ``path`` imports anywhere (module level, functions, TYPE_CHECKING blocks)."""
    found: set[str] = set()

    def add(dotted: str) -> None:
        if dotted == PKG:
            found.add("__init__")
        elif dotted.startswith(PKG + "."):
            found.add(dotted[len(PKG) + 1:].split(".")[0])

    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against the package
                base = PKG + ("." + base if base else "")
            if base == PKG:  # ``from slimline.core.models import x``: x may be a submodule
                for alias in node.names:
                    found.add(alias.name if alias.name in known else "__init__")
            else:
                add(base)
    found.discard(path.stem)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: imports_of(p, set(mods)) for name, p in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of module names (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (cyc := visit(m)):
                return cyc
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cyc := visit(n)):
            return cyc
    return None


def test_the_checker_sees_function_level_cycles(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from slimline.core.models.b import g\n")
    (tmp_path / "b.py").write_text("from slimline.core.models import a\n")
    known = {"a", "b"}
    graph = {p.stem: imports_of(p, known) for p in tmp_path.glob("*.py")}
    assert graph == {"a": {"b"}, "b": {"a"}}
    assert find_cycle(graph) in (["a", "b", "a"], ["b", "a", "b"])
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_core_models_imports_have_no_cycle():
    graph = _graph()
    assert len(graph) >= 10, graph  # the parser found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in slimline.core.models: " + " -> ".join(cycle or [])


def test_every_module_has_a_layer_and_imports_only_downwards():
    graph = _graph()
    assert set(graph) == set(LAYERS), f"add new modules to LAYERS: {sorted(set(graph) ^ set(LAYERS))}"
    upward = [f"{a} (layer {LAYERS[a]}) imports {b} (layer {LAYERS[b]})"
              for a, deps in graph.items() for b in deps if LAYERS[b] > LAYERS[a]]
    assert not upward, upward
