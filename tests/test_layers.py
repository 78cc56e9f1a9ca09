"""The package's import graph: no cycles between its packages and no edge from a lower layer to a higher one.

Every module under `hf_smallllm/` is parsed (not imported): `import` and `from ... import` statements anywhere in the
file (function-level imports included), `importlib.import_module(...)` / `__import__(...)` calls, and strings naming a
module's attribute the way registries do (`"hf_smallllm.hub.recipe:build"`), so a dependency cannot hide in a string.
A module's package is its first component below `hf_smallllm` (`hf_smallllm.train.api` -> `train`); top-level
modules (`demo.py`, `smoke.py`, `runfiles.py`) are packages of their own, and `hf_smallllm/__init__.py` belongs
with `families` (it re-exports the models and registers the families).
"""

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "hf_smallllm"

# Lowest first. A package may import packages of its own layer or of lower layers, never of a higher one; the cycle
# check below also forbids mutual imports inside a layer.
LAYERS = [
    {"errors", "runfiles", "resources"},  # standard library only: anything may import them
    {"models"},  # ships as remote code: torch, transformers and its siblings only
    {"families", "__init__", "layouts"},  # family records, the layout registry; the package's __init__ registers them
    {"convert", "tokenization", "data"},
    {"inference"},
    {"eval", "hub"},
    {"train"},
    {"sft", "longctx", "bench", "smoke", "testing"},  # testing: harnesses (Hub server, GPU check), not the product
    {"demo"},
    {"cli"},
]
LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}

# Back-edges that another branch of work removes; each entry must still exist (so the list only shrinks).
KNOWN_BACK_EDGES: set[tuple[str, str]] = set()
# Modules of the bottom layer import only the standard library (and each other).
STDLIB_ONLY = {"errors", "runfiles"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    if not level:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _is_module_string(value: str) -> bool:
    """A registry entry naming a module's attribute, `"hf_smallllm.hub.recipe:build_publish_callbacks"`."""
    head, sep, attribute = value.partition(":")
    return bool(sep) and attribute.isidentifier() and head.startswith(PACKAGE + ".") \
        and all(part.isidentifier() for part in head.split("."))


def imports_of(path: Path) -> set[str]:
    """Every module (or module.attribute) that the file at `path` imports or names as a module string."""
    module, is_package = _module_name(path), path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node.level, node.module)
            found.add(target)
            # `from package import name`: an edge to `package.name` only when that is a module (not an attribute)
            found.update(f"{target}.{alias.name}" for alias in node.names if _is_module(f"{target}.{alias.name}"))
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in ("import_module", "__import__") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    level = len(first.value) - len(first.value.lstrip("."))
                    found.add(_resolve(module, True if level else is_package, level, first.value.lstrip(".")))
                else:
                    # A computed name: count every relative or absolute module-like string in the file instead.
                    for const in ast.walk(tree):
                        if isinstance(const, ast.Constant) and isinstance(const.value, str):
                            text = const.value
                            if text.startswith(".") and text.lstrip(".").replace(".", "").isidentifier():
                                level = len(text) - len(text.lstrip("."))
                                found.add(_resolve(module, is_package, level, text.lstrip(".")))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _is_module_string(node.value):
            found.add(node.value.split(":", 1)[0])
    return found


def package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def package_edges() -> dict[tuple[str, str], set[str]]:
    edges = defaultdict(set)
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        source = package_of(_module_name(path))
        for target_module in imports_of(path):
            target = package_of(target_module)
            if target is not None and target != source:
                edges[(source, target)].add(f"{_module_name(path)} -> {target_module}")
    return edges


def _cycles(edges) -> list[list[str]]:
    graph = defaultdict(set)
    for source, target in edges:
        graph[source].add(target)
    cycles, state = [], {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_every_package_has_a_layer():
    packages = {package_of(_module_name(p)) for p in (ROOT / PACKAGE).rglob("*.py")}
    assert packages - set(LAYER_OF) == set(), "add new packages to LAYERS in tests/test_layers.py"


def test_no_edge_from_a_lower_layer_to_a_higher_one():
    edges = package_edges()
    upward = {(s, t): sorted(v)[:3] for (s, t), v in edges.items()
              if LAYER_OF[t] > LAYER_OF[s] and (s, t) not in KNOWN_BACK_EDGES}
    assert upward == {}, f"imports from a lower layer to a higher one (layers: {LAYERS}): {upward}"


def test_known_back_edges_still_exist():
    edges = package_edges()
    gone = {edge for edge in KNOWN_BACK_EDGES if edge not in edges}
    assert gone == set(), f"remove {gone} from KNOWN_BACK_EDGES: the edge no longer exists"


def test_no_cycles_between_packages():
    edges = {edge for edge in package_edges() if edge not in KNOWN_BACK_EDGES}
    assert _cycles(edges) == []


@pytest.mark.parametrize("name", sorted(STDLIB_ONLY))
def test_bottom_layer_imports_only_the_standard_library(name):
    path = ROOT / PACKAGE / f"{name}.py"
    outside = {m for m in imports_of(path)
               if m.split(".")[0] not in sys.stdlib_module_names and package_of(m) not in STDLIB_ONLY}
    assert outside == set(), f"{path.name} must import only the standard library, got {sorted(outside)}"


def test_the_parser_sees_function_level_and_string_imports(tmp_path):
    source = ROOT / PACKAGE / "train" / "extensions.py"
    found = imports_of(source)
    assert "hf_smallllm.hub.recipe" in found and "hf_smallllm.eval.recipe" in found
    lazy = ROOT / PACKAGE / "train" / "__init__.py"
    assert "hf_smallllm.runfiles" in imports_of(lazy)  # computed import_module names in a lazy __init__
    assert _is_module_string("hf_smallllm.hub.recipe:build_publish_callbacks")
    assert not _is_module_string("see hf_smallllm.runfiles for the format")


def test_the_command_line_imports_the_library_only_inside_functions():
    """hf_smallllm_cli parses arguments with the standard library alone; its subcommands import `hf_smallllm`
    (torch, transformers) inside their `run` functions. tests/test_cli_imports.py checks the same by running it."""
    offending = []
    for path in sorted((ROOT / "hf_smallllm_cli").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # module level only
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            offending += [f"{path.name}: {name}" for name in names if name.split(".")[0] not in sys.stdlib_module_names]
    assert offending == []
