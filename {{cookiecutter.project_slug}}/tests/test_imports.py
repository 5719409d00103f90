"""The package's imports run one way: no module imports, directly or not, one that imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import {{ cookiecutter.package_name }}

PACKAGE_DIR = Path({{ cookiecutter.package_name }}.__file__).parent
PACKAGE = PACKAGE_DIR.name


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Modules of this package that `path` imports, at any depth of the file (lazy ones too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {c for c in candidates if c.split(".")[0] == PACKAGE}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    return {name: imports_of(path) & set(modules) - {name} for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return [*visiting[visiting.index(node) :], node]
        if node in done:
            return None
        visiting.append(node)
        for child in sorted(edges.get(node, ())):
            if cycle := visit(child):
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for node in sorted(edges):
        if cycle := visit(node):
            return cycle
    return None


def test_the_import_graph_has_no_cycle() -> None:
    edges = graph()
    assert len(edges) > 10, "found too few modules: is the package where the test thinks?"
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


GROUND = {
    "config",
    "errors",
    "logging_config",
    "schema",
    "metrics",
    "processed",
    "bundle",
    "runtimes",
}
# Stage folders are siblings on the ground floor: none imports another, except where a stage
# really consumes another's output (the service writes the prediction log, monitoring reads it).
MAY_IMPORT = {
    "prediction_log": set(),
    "pipeline": set(),
    "serving": {"prediction_log"},
    "monitoring": {"prediction_log"},
}


def room(module: str) -> str:
    """A module's room: its top-level folder, or the module itself at the package root."""
    return module.split(".")[1] if module.count(".") else module


def rooms() -> dict[str, set[str]]:
    """Which rooms each room imports (a folder counts as one room)."""
    edges: dict[str, set[str]] = {}
    for module, targets in graph().items():
        if module != PACKAGE:
            edges.setdefault(room(module), set()).update(room(t) for t in targets if t != PACKAGE)
    return {name: targets - {name} for name, targets in edges.items()}


def test_the_ground_floor_imports_nothing_above_it() -> None:
    """Settings, errors, the schema, metrics, the bundle and its runtimes: everything else may
    use them, not the reverse."""
    upward = {name: sorted(rooms()[name] - GROUND) for name in GROUND if rooms()[name] - GROUND}
    assert not upward, upward


def test_stage_folders_are_siblings() -> None:
    edges = rooms()
    wrong = {
        folder: sorted(edges[folder] & set(MAY_IMPORT) - allowed)
        for folder, allowed in MAY_IMPORT.items()
        if folder in edges and edges[folder] & set(MAY_IMPORT) - allowed
    }
    assert not wrong, wrong


def test_the_house_has_at_most_seven_floors() -> None:
    """A room stands one floor above everything it imports."""
    edges, floors = rooms(), {}

    def floor(name: str) -> int:
        if name not in floors:
            floors[name] = 1 + max((floor(t) for t in edges.get(name, ())), default=0)
        return floors[name]

    assert max(floor(name) for name in edges) <= 7, {name: floor(name) for name in edges}
