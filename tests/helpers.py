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
COMBINATIONS: list[dict[str, Any]] = [
    dict(zip(AXES, values, strict=True)) for values in itertools.product(*AXES.values())
]


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


def load_service_process() -> ModuleType:
    """The generated project's start / wait-until-ready / stop helper, written once and used by
    its demo, its tests, the benchmarks and these tests (stdlib only, no template syntax)."""
    path = TEMPLATE / "{{cookiecutter.project_slug}}/src/{{cookiecutter.package_name}}"
    spec = importlib.util.spec_from_file_location("service_process", path / "serving/process.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
