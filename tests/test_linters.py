"""Generated CI files, Dockerfiles and the template's own workflow pass their linters."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import AXES, TEMPLATE, run, tool


def existing(paths: list[Path]) -> list[str]:
    """The paths as strings; fail (never skip) if the template did not generate one of them."""
    missing = [str(path) for path in paths if not path.is_file()]
    assert not missing, f"expected generated files are missing: {missing}"
    return [str(path) for path in paths]


def actionlint(files: list[str]) -> None:
    # shellcheck (from tests/requirements.txt) checks the `run:` scripts too.
    run([tool("actionlint"), f"-shellcheck={tool('shellcheck')}", "-pyflakes=", *files])


@pytest.fixture(scope="module")
def github_projects(bake: Callable[..., Path]) -> dict[bool, Path]:
    """A GitHub bake with and without monitoring (workflows are copied, not rendered)."""
    return {
        monitoring: bake(ci="github", include_monitoring=monitoring) for monitoring in (True, False)
    }


@pytest.fixture(scope="module")
def gitlab_projects(bake: Callable[..., Path]) -> list[Path]:
    """GitLab bakes for every answer that changes the rendered .gitlab-ci.yml."""
    return [
        bake(ci="gitlab", include_docker=docker, include_monitoring=monitoring, python_version=py)
        for docker, monitoring, py in itertools.product(
            [True, False], [True, False], AXES["python_version"]
        )
    ]


def workflows(projects: dict[bool, Path]) -> list[str]:
    return existing(
        [
            path
            for monitoring, project in projects.items()
            for path in [
                project / ".github/workflows/ci.yml",
                *([project / ".github/workflows/monitor.yml"] if monitoring else []),
            ]
        ]
    )


def test_github_workflows_pass_actionlint(github_projects: dict[bool, Path]) -> None:
    actionlint(workflows(github_projects))


def test_github_workflows_match_the_schema(github_projects: dict[bool, Path]) -> None:
    files = workflows(github_projects)
    run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *files])


def test_dependabot_config_matches_the_schema(github_projects: dict[bool, Path]) -> None:
    files = existing([project / ".github/dependabot.yml" for project in github_projects.values()])
    run([tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot", *files])


def test_gitlab_ci_matches_the_schema(gitlab_projects: list[Path]) -> None:
    files = existing([project / ".gitlab-ci.yml" for project in gitlab_projects])
    run([tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", *files])


@pytest.mark.parametrize("python_version", AXES["python_version"])
def test_dockerfile_passes_hadolint(bake: Callable[..., Path], python_version: str) -> None:
    project = bake(include_docker=True, python_version=python_version)
    # Run from the project so a .hadolint.yaml there, if any, applies.
    run([tool("hadolint"), *existing([project / "Dockerfile"])], cwd=project)


def test_template_ci_workflow_passes_actionlint() -> None:
    actionlint(existing(sorted((TEMPLATE / ".github" / "workflows").glob("*.yml"))))
