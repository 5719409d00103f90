"""Every combination of the template's options bakes into a clean, consistent project."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import subprocess
import tomllib
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from cookiecutter.main import cookiecutter

from helpers import (
    AXES,
    COMBINATIONS,
    INTERACTING,
    OPTIONS,
    TEMPLATE,
    allowed,
    combination_id,
    tool,
)

PACKAGE = "tumor_classifier"  # the package name the default project name gives
# Jinja left in a file: an unrendered {{ }}, {% %} or {# #}.
RESIDUE = re.compile(r"\{\{|\{%|\{#")
# Workflows are copied without rendering: GitHub's own ${{ }} is fine there, cookiecutter's is not.
WORKFLOW_RESIDUE = re.compile(r"(?<!\$)\{\{|\{%|\{#|cookiecutter\.")
# Prefect's base job template is Prefect's own {{ }} template: none of cookiecutter's may be left.
PREFECT_RESIDUE = re.compile(r"\{%|\{#|cookiecutter\.")
LAYOUT = [
    "Makefile",
    "config.yaml",
    "pyproject.toml",
    ".python-version",
    "README.md",
    "LICENSE",
    ".gitignore",
    ".pre-commit-config.yaml",
    "Dockerfile",
    ".dockerignore",
    "render.yaml",
    "requirements/serve.txt",
    "tests/test_lock.py",
    "prefect.yaml",
    "zensical.toml",
    ".github/workflows/ci.yml",
    ".github/workflows/cd.yml",
    ".github/workflows/monitor.yml",
    ".github/workflows/docs.yml",
    ".github/dependabot.yml",
    "deploy/kubernetes/kustomization.yaml",
    "deploy/kubernetes/deployment.yaml",
    "deploy/kubernetes/service.yaml",
    "deploy/kubernetes/hpa.yaml",
    "deploy/prefect/worker-values.yaml",
    "deploy/prefect/base-job-template.json",
    "docs/build.py",
    "docs/code-tour.md",
    "docs/decisions/index.md",
    "notebooks/01-explore.ipynb",
    "notebooks/02-error-analysis.ipynb",
    "tests/conftest.py",
    "tests/test_smoke.py",
    "tests/test_imports.py",
    "tests/test_docs.py",
]
# The package of the default bake, module by module: a module added, moved or removed shows here
# (and in docs/code-tour.md, which tests/test_docs.py holds to the same list).
MODULES = {
    "__init__.py", "__main__.py", "py.typed", "cli.py", "demo.py", "smoke.py",
    "config.py", "errors.py", "logging_config.py", "schema.py", "metrics.py", "processed.py",
    "bundle.py", "runtimes.py",
    *(f"pipeline/{name}" for name in (
        "__init__.py", "columns.py", "data.py", "features.py", "train.py", "evaluate.py",
        "registry.py", "lifecycle.py", "onnx_export.py", "report.py",
    )),
    *(f"serving/{name}" for name in (
        "__init__.py", "app.py", "routes.py", "deps.py", "guards.py", "predictor.py",
        "schemas.py", "prometheus.py", "server.py", "process.py",
    )),
    *(f"prediction_log/{name}" for name in (
        "__init__.py", "tables.py", "spool.py", "writer.py", "reader.py", "feedback.py",
    )),
    *(f"monitoring/{name}" for name in (
        "__init__.py", "drift.py", "quality.py", "compare.py", "alerts.py", "simulate.py",
    )),
    "orchestration/__init__.py", "orchestration/flows.py", "orchestration/schedule.py",
}  # fmt: skip


def _bake(job: tuple[dict[str, Any], Path, Path]) -> str:
    """Bake one combination (in a worker process); return the project dir or the error."""
    answers, output_dir, config = job
    try:
        return cookiecutter(
            str(TEMPLATE),
            no_input=True,
            extra_context=answers,
            output_dir=str(output_dir),
            config_file=str(config),
        )
    except Exception as error:  # reported by the test of that combination
        return f"ERROR {type(error).__name__}: {error}"


@pytest.fixture(scope="session")
def matrix(tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path) -> dict[str, str]:
    """Bake every combination once, through cookiecutter's Python API, on every core."""
    root = tmp_path_factory.mktemp("matrix")
    ids = [combination_id(answers) for answers in COMBINATIONS]
    jobs = [
        (answers, root / combination_id(answers), cookiecutter_config) for answers in COMBINATIONS
    ]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        return dict(zip(ids, pool.map(_bake, jobs, chunksize=8), strict=True))


def baked(matrix: dict[str, str], answers: dict[str, Any]) -> Path:
    project = matrix[combination_id(answers)]
    if project.startswith("ERROR"):
        pytest.fail(f"the bake failed: {project}")
    return Path(project)


def text_files(project: Path) -> dict[Path, str]:
    files = {}
    for path in project.rglob("*"):
        if path.is_file():
            try:
                files[path] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:  # a binary file: nothing to render in it
                continue
    return files


@cache
def compile_error(source: str, name: str) -> str | None:
    """Compile once per distinct source: most files are identical across combinations."""
    try:
        compile(source, name, "exec", dont_inherit=True)
    except SyntaxError as error:
        return f"{name}:{error.lineno}: {error.msg}"
    return None


def expected_parts(answers: dict[str, Any]) -> dict[str, bool]:
    """Path -> whether the answers say it must exist."""
    monitoring, github = answers["include_monitoring"], answers["ci"] == "github"
    docker, deploy = answers["include_docker"], answers["deploy"]
    prefect = answers["orchestrator"] == "prefect"
    return {
        "Dockerfile": docker,
        ".dockerignore": docker,
        "requirements/serve.txt": docker,  # the image's lock, and the test that checks it
        "tests/test_lock.py": docker,
        "tests/platforms.py": docker,  # the image run as each deploy target runs it
        "tests/test_platforms.py": docker,
        "deploy/kubernetes/kustomization.yaml": docker,
        "render.yaml": deploy == "render",
        "deploy/cloudrun/service.yaml": deploy == "cloudrun",
        "deploy/huggingface/README.md": deploy == "huggingface",
        "deploy/huggingface/Dockerfile": deploy == "huggingface",
        ".github/workflows/cd.yml": github and deploy != "none",
        ".github/workflows/cd-render.yml": False,
        ".github/workflows/cd-huggingface.yml": False,
        ".github/workflows/cd-cloudrun.yml": False,
        f"src/{PACKAGE}/monitoring": monitoring,
        "tests/monitoring": monitoring,
        ".github": github,
        ".github/workflows/ci.yml": github,
        ".github/workflows/monitor.yml": github and monitoring,
        ".github/dependabot.yml": github,
        ".gitlab-ci.yml": answers["ci"] == "gitlab",
        "LICENSE": answers["license"] != "Proprietary",
        f"src/{PACKAGE}/orchestration": prefect,
        "tests/orchestration": prefect,
        "deploy/prefect/worker-values.yaml": prefect and docker,  # deploy/ goes with the image
        "prefect.yaml": prefect and docker,  # its Kubernetes jobs run the training image
        "docs/operations/orchestration.md": prefect,
        "docs/operations/monitoring.md": monitoring,
        "docs/decisions/0006-drift-thresholds.md": monitoring,
        ".github/workflows/docs.yml": github,
        "zensical.toml": True,
        "notebooks/01-explore.ipynb": True,
    }


def test_matrix_covers_every_option_of_cookiecutter_json() -> None:
    assert set(AXES) >= {
        "python_version", "task", "model_family", "include_docker", "include_monitoring", "ci",
        "deploy", "license",
    }  # fmt: skip
    # Pairwise: any two values of two options meet in some baked combination, unless the hook
    # rejects that pair (deploying without the image).
    for first, second in itertools.combinations(AXES, 2):
        baked = {(answers[first], answers[second]) for answers in COMBINATIONS}
        wanted = {
            (a, b) for a in AXES[first] for b in AXES[second] if allowed({first: a, second: b})
        }
        assert baked == wanted, f"{first} x {second}: missing {wanted - baked}"
    # Options that change the same files are baked in every allowed combination of their values.
    for group in INTERACTING:
        baked = {tuple(answers[name] for name in group) for answers in COMBINATIONS}
        wanted = {
            values
            for values in itertools.product(*(AXES[name] for name in group))
            if allowed(dict(zip(group, values, strict=True)))
        }
        assert baked == wanted, f"{group}: missing {wanted - baked}"
    assert len(COMBINATIONS) == len({combination_id(answers) for answers in COMBINATIONS})


@pytest.mark.parametrize("answers", COMBINATIONS, ids=combination_id)
def test_combination_bakes(answers: dict[str, Any], matrix: dict[str, str]) -> None:
    assert baked(matrix, answers).is_dir()


@pytest.mark.parametrize("answers", COMBINATIONS, ids=combination_id)
def test_no_template_syntax_is_left(answers: dict[str, Any], matrix: dict[str, str]) -> None:
    project = baked(matrix, answers)
    leftovers = []
    for path, text in text_files(project).items():
        residue = RESIDUE
        if path.parent.match(".github/workflows"):
            residue = WORKFLOW_RESIDUE
        elif path.match("deploy/prefect/base-job-template.json"):
            residue = PREFECT_RESIDUE
        for number, line in enumerate(text.splitlines(), 1):
            if residue.search(line):
                leftovers.append(f"{path.relative_to(project)}:{number}: {line.strip()}")
    assert not leftovers, "\n".join(leftovers)


@pytest.mark.parametrize("answers", COMBINATIONS, ids=combination_id)
def test_python_files_compile(answers: dict[str, Any], matrix: dict[str, str]) -> None:
    project = baked(matrix, answers)
    errors = [
        compile_error(path.read_text(encoding="utf-8"), str(path.relative_to(project)))
        for path in project.rglob("*.py")
    ]
    assert not [error for error in errors if error]


@pytest.mark.parametrize("answers", COMBINATIONS, ids=combination_id)
def test_config_files_parse(answers: dict[str, Any], matrix: dict[str, str]) -> None:
    project = baked(matrix, answers)
    tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    for path in [*project.rglob("*.yaml"), *project.rglob("*.yml")]:
        yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("answers", COMBINATIONS, ids=combination_id)
def test_files_follow_the_options(answers: dict[str, Any], matrix: dict[str, str]) -> None:
    project = baked(matrix, answers)
    wrong = [
        f"{'missing' if should_exist else 'should have been removed'}: {path}"
        for path, should_exist in expected_parts(answers).items()
        if (project / path).exists() != should_exist
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("answers", COMBINATIONS, ids=combination_id)
def test_python_version_is_the_chosen_one(answers: dict[str, Any], matrix: dict[str, str]) -> None:
    project = baked(matrix, answers)
    assert (project / ".python-version").read_text().strip() == answers["python_version"]
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["requires-python"] == f">={answers['python_version']}"


def test_every_combination_is_ruff_clean(matrix: dict[str, str]) -> None:
    # One ruff run over all baked projects; each is checked with its own pyproject.toml.
    projects = [Path(project) for project in matrix.values() if not project.startswith("ERROR")]
    assert projects, "no combination baked"
    root, ruff = projects[0].parents[1], tool("ruff")
    check = subprocess.run(
        [ruff, "check", "--no-cache", "--output-format", "json", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    problems = [
        f"{Path(issue['filename']).relative_to(root)}: {issue['code']} {issue['message']}"
        for issue in json.loads(check.stdout or "[]")
    ]
    fmt = subprocess.run(
        [ruff, "format", "--no-cache", "--check", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    problems += [
        f"{Path(line.removeprefix('Would reformat: ')).relative_to(root)}: not ruff-formatted"
        for line in fmt.stdout.splitlines()
        if line.startswith("Would reformat: ")
    ]
    assert check.returncode == fmt.returncode == 0, summarize(problems) or check.stderr + fmt.stderr


def summarize(problems: list[str]) -> str:
    """The same problem in many combinations, once: `path: problem (N combinations, e.g. id)`."""
    combos: dict[str, list[str]] = defaultdict(list)
    for problem in problems:
        combination, _slug, rest = problem.split("/", 2)
        combos[rest].append(combination)
    return "\n".join(
        f"{rest}  ({len(ids)} combinations, e.g. {ids[0]})" for rest, ids in sorted(combos.items())
    )


def test_default_project_has_the_documented_layout(default_project: Path) -> None:
    missing = [path for path in LAYOUT if not (default_project / path).is_file()]
    assert not missing, f"missing from the default bake: {missing}"
    package = default_project / "src" / PACKAGE
    modules = {
        str(path.relative_to(package))
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert modules == MODULES, f"new: {modules - MODULES}, gone: {MODULES - modules}"


@pytest.mark.parametrize(
    ("project_name", "slug", "package"),
    [
        ("Tumor Classifier", "tumor-classifier", "tumor_classifier"),
        ("Café Crème Prédictor", "cafe-creme-predictor", "cafe_creme_predictor"),
        ("Straße Größe", "strasse-grosse", "strasse_grosse"),
        ("My ML-Service  v2!", "my-ml-service-v2", "my_ml_service_v2"),
    ],
)
def test_slug_and_package_derive_from_the_project_name(
    cookies: Any, project_name: str, slug: str, package: str
) -> None:
    # cookiecutter's slugify: ASCII-folded, lowercase, runs of anything else become one dash.
    result = cookies.bake(extra_context={"project_name": project_name})
    assert result.exit_code == 0, result.exception
    assert result.project_path.name == slug
    assert (result.project_path / "src" / package).is_dir()
    pyproject = tomllib.loads((result.project_path / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == slug


@pytest.mark.parametrize(
    ("license_", "title"),
    [("MIT", "MIT License"), ("Apache-2.0", "Apache License"), ("BSD-3-Clause", "BSD 3-Clause")],
)
def test_license_is_the_full_text_with_year_and_author(
    bake: Callable[..., Path], license_: str, title: str
) -> None:
    text = (bake(license=license_, author_name="Ada Lovelace") / "LICENSE").read_text()
    assert title in text.splitlines()[0] + text.splitlines()[1]
    assert re.search(rf"{dt.datetime.now(dt.UTC).year},? Ada Lovelace", text)
    # The whole standard text, not an excerpt: compare with its well-known size.
    assert len(text) > {"MIT": 1000, "Apache-2.0": 11000, "BSD-3-Clause": 1400}[license_]


def test_proprietary_project_has_no_license_file_or_field(bake: Callable[..., Path]) -> None:
    project = bake(license="Proprietary")
    assert not (project / "LICENSE").exists()
    assert "license" not in tomllib.loads((project / "pyproject.toml").read_text())["project"]


def test_every_option_is_documented_in_the_readme() -> None:
    readme = (TEMPLATE / "README.md").read_text(encoding="utf-8")
    undocumented = [
        name for name in OPTIONS if not name.startswith("_") and f"`{name}`" not in readme
    ]
    assert not undocumented, f"options missing from the README's table: {undocumented}"
