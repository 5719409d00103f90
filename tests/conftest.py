"""Shared fixtures: baking the template and one virtualenv for the generated projects."""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cookiecutter.main import cookiecutter

from helpers import TEMPLATE, run, tool


def pytest_configure(config: pytest.Config) -> None:
    # pytest-cookies bakes this template wherever pytest is started from.
    config.option.template = str(TEMPLATE)


@pytest.fixture(scope="session", autouse=True)
def _hook_scripts_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """cookiecutter leaves every rendered hook script in the temp dir: keep them in pytest's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("hook-scripts")))
        yield


@pytest.fixture(scope="session")
def cookiecutter_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cookiecutter user config that keeps replay files out of the home directory."""
    home = tmp_path_factory.mktemp("cookiecutter-home")
    config = home / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {"replay_dir": str(home / "replay"), "cookiecutters_dir": str(home / "templates")}
        )
    )
    return config


@pytest.fixture(scope="session")
def bake(
    tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path
) -> Callable[..., Path]:
    """Bake the template with some answers (the rest are defaults); return the project dir."""

    def _bake(**answers: Any) -> Path:
        project = cookiecutter(
            str(TEMPLATE),
            no_input=True,
            extra_context=answers,
            output_dir=str(tmp_path_factory.mktemp("bake")),
            config_file=str(cookiecutter_config),
        )
        return Path(project)

    return _bake


@pytest.fixture(scope="session")
def default_project(bake: Callable[..., Path]) -> Path:
    """The project every default answer gives; shared, so tests must not write into it."""
    return bake()


@pytest.fixture(scope="session")
def generated_python(
    default_project: Path, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Python of one virtualenv holding every dependency of a generated project.

    Built once from the default bake's pyproject.toml (all extras) and reused across runs
    while that file is unchanged. Projects are baked with the default package name and run
    from their own folder, so pytest's `pythonpath = ["src"]` imports their code.
    """
    pyproject = default_project / "pyproject.toml"
    key = hashlib.sha256(pyproject.read_bytes() + sys.version.encode()).hexdigest()
    cache = request.config.cache
    venv = cache.mkdir("generated-venv") if cache else tmp_path_factory.mktemp("generated-venv")
    python, stamp = venv / "bin" / "python", venv / "pyproject.sha256"
    if python.exists() and stamp.exists() and stamp.read_text() == key:
        return python
    uv = tool("uv")
    shutil.rmtree(venv)
    run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)])
    install = ["pip", "install", "--quiet", "--compile-bytecode", "--python", str(python)]
    run([uv, *install, "-r", str(pyproject), "--all-extras"])
    stamp.write_text(key)
    return python
