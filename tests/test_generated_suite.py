"""Each generated project's own test suite passes, for every task and model family."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers import AXES, OPTIONS

TASKS_AND_FAMILIES = list(itertools.product(AXES["task"], AXES["model_family"]))
DEFAULT = (OPTIONS["task"][0], OPTIONS["model_family"][0])
# Generated tests that depend on neither the task nor the model family run in the default bake
# only: the HTTP server processes and guards, the prediction log's writer, smoke, alerts, the
# Prefect flows over the stages, the image run as each deploy target runs it.
TASK_INDEPENDENT = (
    "tests/serving/test_server.py",
    "tests/serving/test_guards.py",
    "tests/serving/test_process.py",
    "tests/monitoring/test_alerts.py",
    "tests/prediction_log/test_writer.py",
    "tests/test_smoke.py",
    "tests/orchestration",
    "tests/test_platforms.py",
)
# Those that depend on the task but not on the model family run in each task's first family:
# the demo loop, the notebooks and docs, monitoring and the prediction log's tables. Each
# family's training, export, parity and serving have their own tests.
FAMILY_INDEPENDENT = (
    *TASK_INDEPENDENT,
    "tests/test_demo.py",
    "tests/test_docs.py",
    "tests/monitoring",
    "tests/prediction_log",
)


def ignored(task: str, family: str) -> tuple[str, ...]:
    if family != OPTIONS["model_family"][0]:
        return FAMILY_INDEPENDENT
    return () if (task, family) == DEFAULT else TASK_INDEPENDENT


def generated_env() -> dict[str, str]:
    """The environment a learner's shell would have: nothing of this test run leaks in."""
    skip = ("ML_", "PYTEST", "VIRTUAL_ENV", "CONFIG_FILE", "MLFLOW_TRACKING_URI")
    env = {key: value for key, value in os.environ.items() if not key.startswith(skip)}
    return {**env, "MLFLOW_DISABLE_TELEMETRY": "true"}


def run_suite(
    python: Path, project: Path, coverage: bool, ignore: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + ([] if coverage else ["--no-cov"])
        + [f"--ignore={path}" for path in ignore],
        cwd=project,
        env=generated_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture(scope="module")
def suite_runs(
    request: pytest.FixtureRequest, bake: Callable[..., Path], generated_python: Path
) -> dict[tuple[str, str], Future[subprocess.CompletedProcess[str]]]:
    """Start the selected suites side by side (one per core): each is mostly single-threaded.

    The default bake runs exactly like its `make test`, coverage gate included; the others
    skip coverage, which only slows them down, and what `ignored` leaves to another bake.
    """
    selected = {
        (item.callspec.params["task"], item.callspec.params["model_family"])
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_generated_test_suite_passes"
    }
    pool = ThreadPoolExecutor(max_workers=os.cpu_count())
    request.addfinalizer(pool.shutdown)
    return {
        (task, family): pool.submit(
            run_suite,
            generated_python,
            bake(task=task, model_family=family),
            coverage=(task, family) == DEFAULT,
            ignore=ignored(task, family),
        )
        for task, family in sorted(TASKS_AND_FAMILIES, key=lambda tf: len(ignored(*tf)))
        if (task, family) in selected  # the longest suites first: the pool finishes sooner
    }


@pytest.mark.parametrize(("task", "model_family"), TASKS_AND_FAMILIES)
def test_generated_test_suite_passes(
    suite_runs: dict[tuple[str, str], Future[subprocess.CompletedProcess[str]]],
    task: str,
    model_family: str,
) -> None:
    result = suite_runs[task, model_family].result()
    assert result.returncode == 0, (result.stdout + result.stderr)[-8000:]


def test_generated_code_passes_strict_mypy(default_project: Path, generated_python: Path) -> None:
    result = subprocess.run(
        [str(generated_python), "-m", "mypy", "--cache-dir=/dev/null", "src"],
        cwd=default_project,
        env=generated_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-8000:]
