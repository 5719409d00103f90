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


def test_the_ground_floor_imports_nothing_above_it() -> None:
    """Settings, errors, logging and the schema: everything else may use them, not the reverse."""
    edges = graph()
    ground = {f"{PACKAGE}.{name}" for name in ("config", "errors", "logging_config", "schema")}
    upward = {module: sorted(edges[module] - ground) for module in ground if edges[module] - ground}
    assert not upward, upward


def test_serving_does_not_import_training_or_monitoring() -> None:
    edges = graph()
    serving = [m for m in edges if m.startswith(f"{PACKAGE}.serving")]
    wrong = {
        module: sorted(
            target
            for target in edges[module]
            if target.startswith((f"{PACKAGE}.pipeline", f"{PACKAGE}.monitoring"))
        )
        for module in serving
    }
    assert not any(wrong.values()), wrong
