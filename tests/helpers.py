"""What the tests share besides fixtures: the template's options and running tools."""

from __future__ import annotations

import importlib.util
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TEMPLATE = Path(__file__).resolve().parents[1]
OPTIONS: dict[str, Any] = json.loads((TEMPLATE / "cookiecutter.json").read_text(encoding="utf-8"))

# Every multiple-choice or yes/no option, with all its values, read from cookiecutter.json
# so that a new option is covered by the tests without touching them.
AXES: dict[str, list[Any]] = {
    name: default if isinstance(default, list) else [True, False]
    for name, default in OPTIONS.items()
    if not name.startswith("_") and isinstance(default, list | bool)
}
# Options whose values change the same files (workflows, deploy files, README sections): every
# combination of their values is baked. Everything else only needs to meet every other value once.
INTERACTING: list[tuple[str, ...]] = [
    ("include_docker", "deploy", "ci"),
    ("include_monitoring", "ci", "orchestrator"),
]


def allowed(answers: dict[str, Any]) -> bool:
    """Whether the hook accepts these (possibly partial) answers: deploying needs the image,
    the orchestrator the monitoring."""
    docker = answers.get("include_docker", True) or answers.get("deploy", "none") == "none"
    return docker and (
        answers.get("include_monitoring", True) or answers.get("orchestrator", "none") == "none"
    )


def requirements() -> list[dict[str, Any]]:
    """What the matrix must contain: every allowed tuple of each interacting group, then every
    allowed pair of values of two options (pairwise coverage)."""
    groups = [
        dict(zip(group, values, strict=True))
        for group in INTERACTING
        for values in itertools.product(*(AXES[name] for name in group))
    ]
    pairs = [
        {first: a, second: b}
        for first, second in itertools.combinations(AXES, 2)
        for a in AXES[first]
        for b in AXES[second]
    ]
    return [answers for answers in groups + pairs if allowed(answers)]


def covers(combination: dict[str, Any], requirement: dict[str, Any]) -> bool:
    return all(combination[name] == value for name, value in requirement.items())


def covering_combinations() -> list[dict[str, Any]]:
    """A small deterministic set of allowed combinations that meets every requirement.

    Greedy: take the first requirement no combination covers yet, fix its values, and fill each
    other option with the value that covers the most still-uncovered requirements (the first
    value on a tie).
    """
    todo, combinations = requirements(), []
    while todo:
        combination = dict(todo[0])
        for name, values in AXES.items():
            if name in combination:
                continue
            candidates = [value for value in values if allowed({**combination, name: value})]
            combination[name] = max(
                candidates,
                key=lambda value: sum(
                    all(
                        {**combination, name: value}.get(key) == wanted
                        for key, wanted in requirement.items()
                    )
                    for requirement in todo
                ),
            )
        combination = {name: combination[name] for name in AXES}  # cookiecutter.json's order
        combinations.append(combination)
        todo = [requirement for requirement in todo if not covers(combination, requirement)]
    return combinations


COMBINATIONS: list[dict[str, Any]] = covering_combinations()


def combination_id(answers: dict[str, Any]) -> str:
    """Short readable id, e.g. 3.11-classification-linear-docker-no_monitoring-github-MIT."""
    parts = []
    for name, value in answers.items():
        if isinstance(value, bool):
            option = name.removeprefix("include_")
            parts.append(option if value else f"no_{option}")
        else:
            parts.append(str(value))
    return "-".join(parts)


def tool(name: str) -> str:
    """Path of a command-line tool from tests/requirements.txt (beside this Python, or on PATH)."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install tests/requirements.txt (`make test` does)")
    return found


def run(command: list[str], *, cwd: Path | None = None, **kwargs: Any) -> str:
    """Run a command; fail the test with the end of its output if it exits non-zero."""
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-8000:]
        pytest.fail(f"`{' '.join(command)}` exited {result.returncode} in {cwd}:\n{output}")
    return result.stdout


def load_module(name: str, path: Path) -> ModuleType:
    """A Python file of the template or of a bake, loaded on its own."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def load_service_process() -> ModuleType:
    """The generated project's start / wait-until-ready / stop helper, written once and used by
    its demo, its tests, the benchmarks and these tests (stdlib only, no template syntax)."""
    path = TEMPLATE / "{{cookiecutter.project_slug}}/src/{{cookiecutter.package_name}}"
    return load_module("service_process", path / "serving/process.py")


def load_platforms(project: Path) -> ModuleType:
    """A bake's tests/platforms.py: its image run as each deploy target runs it (stdlib and
    PyYAML only)."""
    return load_module(f"platforms_{project.parent.name}", project / "tests" / "platforms.py")
