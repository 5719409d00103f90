"""Generated CI files, Dockerfiles and the template's own workflow pass their linters."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import AXES, TEMPLATE, allowed, run, tool


def existing(paths: list[Path]) -> list[str]:
    """The paths as strings; fail (never skip) if the template did not generate one of them."""
    missing = [str(path) for path in paths if not path.is_file()]
    assert not missing, f"expected generated files are missing: {missing}"
    return [str(path) for path in paths]


def actionlint(files: list[str]) -> None:
    # shellcheck (from tests/requirements.txt) checks the `run:` scripts too.
    run([tool("actionlint"), f"-shellcheck={tool('shellcheck')}", "-pyflakes=", *files])


@pytest.fixture(scope="module")
def github_projects(bake: Callable[..., Path]) -> list[Path]:
    """GitHub bakes for every answer that changes the workflows (copied, not rendered): with and
    without monitoring and the orchestrator (monitor.yml), and each deploy target (cd.yml)."""
    return [
        bake(ci="github", include_monitoring=monitoring, orchestrator=orchestrator, deploy=deploy)
        for monitoring, orchestrator, deploy in itertools.product(
            [True, False], AXES["orchestrator"], AXES["deploy"]
        )
        if allowed({"include_monitoring": monitoring, "orchestrator": orchestrator})
    ]


@pytest.fixture(scope="module")
def gitlab_projects(bake: Callable[..., Path]) -> list[Path]:
    """GitLab bakes for every answer that changes the rendered .gitlab-ci.yml."""
    return [
        bake(
            ci="gitlab",
            include_docker=docker,
            include_monitoring=monitoring,
            orchestrator=orchestrator,
            python_version=py,
            deploy=deploy,
        )
        for docker, monitoring, orchestrator, py, deploy in itertools.product(
            [True, False],
            [True, False],
            AXES["orchestrator"],
            AXES["python_version"],
            AXES["deploy"],
        )
        if allowed(
            {"include_docker": docker, "deploy": deploy, "include_monitoring": monitoring}
            | {"orchestrator": orchestrator}
        )
    ]


def workflows(projects: list[Path]) -> list[str]:
    files = [path for project in projects for path in (project / ".github/workflows").glob("*")]
    names = {path.name for path in files}
    expected = {"ci.yml", "monitor.yml", "cd.yml", "docs.yml"}
    assert names == expected, f"unexpected workflows: {names}"
    return existing(files)


def test_github_workflows_pass_actionlint(github_projects: list[Path]) -> None:
    actionlint(workflows(github_projects))


def test_github_workflows_match_the_schema(github_projects: list[Path]) -> None:
    files = workflows(github_projects)
    run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *files])


def test_github_workflows_have_no_zizmor_finding(github_projects: list[Path]) -> None:
    # Offline audits at zizmor's default severity and confidence; exit 0 means no finding.
    for project in github_projects:
        run([tool("zizmor"), "--offline", "--quiet", str(project / ".github/workflows")])


def test_github_workflows_pin_every_action_by_commit(github_projects: list[Path]) -> None:
    # What Dependabot's github-actions updates keep fresh: a full sha, the version beside it.
    pinned = re.compile(r"uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")
    unpinned = [
        f"{path}: {line.strip()}"
        for path in map(Path, workflows(github_projects))
        for line in path.read_text().splitlines()
        if "uses: " in line and "uses: ./" not in line and not pinned.search(line)
    ]
    assert not unpinned, "\n".join(unpinned)


def triggers(workflow: Path) -> dict[str, Any]:
    document = yaml.safe_load(workflow.read_text(encoding="utf-8"))
    return dict(document[True])  # YAML 1.1 reads the key `on` as true


def test_ci_runs_once_per_push(github_projects: list[Path]) -> None:
    """With CD, pushes to main run CI through cd.yml only (the documented `./` form of a
    reusable workflow of the same repository); without CD, CI runs on every push itself."""
    for project in github_projects:
        workflows = project / ".github" / "workflows"
        ci = triggers(workflows / "ci.yml")
        assert "workflow_call" in ci
        if not (workflows / "cd.yml").is_file():
            assert ci["push"] is None, f"{project.name}: no CD, so CI must run on main too"
            continue
        assert ci["push"] == {"branches-ignore": ["main"]}, project.name
        cd = yaml.safe_load((workflows / "cd.yml").read_text(encoding="utf-8"))
        assert triggers(workflows / "cd.yml")["push"] == {"branches": ["main"]}
        assert cd["jobs"]["ci"]["uses"] == "./.github/workflows/ci.yml"


def test_dependabot_config_matches_the_schema(github_projects: list[Path]) -> None:
    files = existing([project / ".github/dependabot.yml" for project in github_projects])
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
