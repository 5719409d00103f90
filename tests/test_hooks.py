"""Bad answers stop the bake with one clear line, and leave nothing behind."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cookiecutter.exceptions import FailedHookException
from cookiecutter.generate import generate_context
from cookiecutter.prompt import prompt_for_config

from helpers import OPTIONS, TEMPLATE, run


def cookiecutter_cli(
    output_dir: Path,
    config: Path,
    *args: str,
    cwd: Path | None = None,
    template: str = str(TEMPLATE),
) -> subprocess.CompletedProcess[str]:
    """Run the cookiecutter command a learner runs, capturing what they would read."""
    # TMPDIR: cookiecutter leaves its rendered hook scripts there; keep them in pytest's.
    # PWD: a shell sets it to the folder it runs the command from.
    shell = {"PWD": str(cwd)} if cwd else {}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "--config-file",
            str(config),
            "-o",
            str(output_dir),
            template,
            *args,
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "TMPDIR": tempfile.gettempdir(), **shell},
    )


def default_answers() -> dict[str, Any]:
    """The answers cookiecutter derives from cookiecutter.json with no input."""
    context = generate_context(context_file=str(TEMPLATE / "cookiecutter.json"))
    return dict(prompt_for_config(context, no_input=True))


def assert_rejected(result: subprocess.CompletedProcess[str], field: str, valid: str) -> None:
    assert result.returncode != 0
    first_line = result.stderr.splitlines()[0] if result.stderr else ""
    assert first_line.startswith(f"ERROR: {field} "), result.stderr
    assert valid in first_line, first_line


@pytest.mark.parametrize(
    ("answer", "field", "valid"),
    [
        ("project_slug=my project", "project_slug", "lowercase letters, digits and dashes"),
        ("project_slug=my_project!", "project_slug", "e.g. 'churn-predictor'"),
        ("project_slug=MyProject", "project_slug", "lowercase letters, digits and dashes"),
        ("project_slug=3d-model", "project_slug", "starting with a letter"),
        ("package_name=class", "package_name", "is a Python keyword"),
        ("package_name=3d_model", "package_name", "starting with a letter"),
        ("package_name=my-model", "package_name", "lowercase letters, digits and underscores"),
        ("package_name=json", "package_name", "would hide the module of the same name"),
        ("package_name=sklearn", "package_name", "would hide the module of the same name"),
        ("package_name=tests", "package_name", "would hide the module of the same name"),
        ("package_name=uvloop", "package_name", "would hide the module of the same name"),
        ("author_email=nobody", "author_email", "e.g. 'you@example.com'"),
        ("repository_owner=Ada Lovelace", "repository_owner", "e.g. 'ada-lovelace'"),
        ("repository_owner=-ada", "repository_owner", "letters, digits and dashes"),
    ],
)
def test_bad_answer_is_rejected_with_one_clear_line(
    tmp_path: Path, cookiecutter_config: Path, answer: str, field: str, valid: str
) -> None:
    result = cookiecutter_cli(tmp_path, cookiecutter_config, "--no-input", answer)
    assert_rejected(result, field, valid)
    assert list(tmp_path.iterdir()) == [], "a rejected bake left files behind"


@pytest.mark.parametrize("deploy", ["render", "cloudrun", "huggingface"])
def test_deploying_without_the_image_is_rejected(
    tmp_path: Path, cookiecutter_config: Path, deploy: str
) -> None:
    # Every deploy target runs the image: the answers must not ask for one without the other.
    answers = ["--no-input", "include_docker=no", f"deploy={deploy}"]
    result = cookiecutter_cli(tmp_path, cookiecutter_config, *answers)
    assert_rejected(result, "deploy", "answer include_docker=yes, or deploy=none")
    assert list(tmp_path.iterdir()) == []


def test_no_docker_and_no_deploy_bakes(bake: Callable[..., Path]) -> None:
    project = bake(include_docker=False, deploy="none")
    assert not (project / "Dockerfile").exists()
    assert not (project / "deploy").exists()


def test_empty_project_name_is_rejected(tmp_path: Path, cookiecutter_config: Path) -> None:
    result = cookiecutter_cli(
        tmp_path,
        cookiecutter_config,
        "--no-input",
        "project_name= ",
        "project_slug=demo",
        "package_name=demo",
    )
    assert_rejected(result, "project_name", "give the project a name")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("task", "clustering"),
        ("model_family", "xgboost"),
        ("ci", "jenkins"),
        ("deploy", "fly"),
        ("python_version", "3.9"),
        ("license", "GPL-3.0"),
    ],
)
def test_unknown_choice_is_rejected_before_anything_is_written(
    cookies: Any, field: str, value: str
) -> None:
    # cookiecutter itself refuses a choice outside the list when it comes as extra context.
    result = cookies.bake(extra_context={field: value})
    assert result.exit_code != 0
    assert result.project_path is None
    message = str(result.exception)
    assert field in message
    assert all(choice in message for choice in OPTIONS[field])


@pytest.mark.parametrize(
    ("field", "value", "valid"),
    [
        ("task", "clustering", "use one of classification, regression"),
        ("model_family", "xgboost", "use one of hist_gradient_boosting, random_forest, linear"),
        ("ci", "jenkins", "use one of github, gitlab, none"),
        ("deploy", "fly", "use one of render, cloudrun, huggingface, none"),
        ("python_version", "3.9", "use one of 3.11, 3.12, 3.13"),
        ("license", "GPL-3.0", "use one of MIT, Apache-2.0, BSD-3-Clause, Proprietary"),
        ("include_docker", "maybe", "use true or false"),
        ("include_monitoring", 1, "use true or false"),
    ],
)
def test_hook_rejects_an_unknown_choice_from_a_replay_file(
    tmp_path: Path, cookiecutter_config: Path, field: str, value: Any, valid: str
) -> None:
    # A replay file skips cookiecutter's own checks: the hook is the last line of defence.
    replay = tmp_path / "replay.json"
    replay.write_text(json.dumps({"cookiecutter": {**default_answers(), field: value}}))
    output_dir = tmp_path / "out"
    result = cookiecutter_cli(output_dir, cookiecutter_config, "--replay-file", str(replay))
    assert_rejected(result, field, valid)
    assert not output_dir.exists() or list(output_dir.iterdir()) == []


def hook_constants(*names: str) -> dict[str, Any]:
    """Literal constants of hooks/pre_gen_project.py (a Jinja template, so not importable)."""
    hook = ast.parse((TEMPLATE / "hooks" / "pre_gen_project.py").read_text(encoding="utf-8"))
    return {
        target.id: ast.literal_eval(node.value)
        for node in hook.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id in names
    }


def test_hook_knows_every_choice_of_cookiecutter_json() -> None:
    constants = hook_constants("CHOICES", "SWITCHES")
    assert constants["CHOICES"] == {
        name: value for name, value in OPTIONS.items() if isinstance(value, list) and name[0] != "_"
    }
    assert constants["SWITCHES"] == [
        name for name, value in OPTIONS.items() if isinstance(value, bool)
    ]


def test_template_bakes_from_a_relative_path(tmp_path: Path, cookiecutter_config: Path) -> None:
    # `make bake` and `make demo` run `cookiecutter .`: the hooks must not depend on the cwd.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "--no-input",
            "--config-file",
            str(cookiecutter_config),
            "-o",
            str(tmp_path),
            ".",
        ],
        cwd=TEMPLATE,
        env={**os.environ, "TMPDIR": tempfile.gettempdir()},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["tumor-classifier"]


@pytest.mark.parametrize("where", ["here", "elsewhere"])
def test_a_bake_ends_with_the_commands_to_run_next(
    tmp_path: Path, cookiecutter_config: Path, where: str
) -> None:
    output_dir = tmp_path / "projects"
    cwd = output_dir if where == "here" else tmp_path
    output_dir.mkdir()
    result = cookiecutter_cli(output_dir, cookiecutter_config, "--no-input", cwd=cwd)

    assert result.returncode == 0, result.stderr
    folder = "tumor-classifier" if where == "here" else str(output_dir / "tumor-classifier")
    assert f"\n    cd {folder}\n" in result.stdout
    assert f"{folder}/README.md explains" in result.stdout
    targets = re.findall(r"^ +make (\w+) ", result.stdout, flags=re.MULTILINE)
    assert targets == ["install", "demo", "train", "serve"]
    makefile = (output_dir / "tumor-classifier" / "Makefile").read_text(encoding="utf-8")
    assert all(re.search(rf"^{target}:", makefile, flags=re.MULTILINE) for target in targets)
    assert "\x1b" not in result.stdout, "plain text: no terminal colours"


def test_template_bakes_from_a_git_clone_as_the_readme_shows(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    # README: `git clone <url> mle-starter`, then `uvx cookiecutter mle-starter`. A clone of
    # this checkout stands in for the URL (its committed files: commit before running this).
    run(["git", "clone", "--quiet", str(TEMPLATE), str(tmp_path / "mle-starter")])
    output_dir = tmp_path / "out"

    result = cookiecutter_cli(
        output_dir, cookiecutter_config, "--no-input", cwd=tmp_path, template="mle-starter"
    )

    assert result.returncode == 0, result.stderr
    state = json.loads((output_dir / "tumor-classifier" / ".cruft.json").read_text())
    assert state["template"] == str(tmp_path / "mle-starter")
    assert state["commit"] == run(["git", "-C", str(TEMPLATE), "rev-parse", "HEAD"]).strip()


def test_rejected_bake_is_a_failed_hook_for_pytest_cookies(cookies: Any) -> None:
    result = cookies.bake(extra_context={"package_name": "class"})
    assert result.exit_code != 0
    assert isinstance(result.exception, FailedHookException)
    assert result.project_path is None


def test_package_name_may_not_shadow_anything_the_project_imports(
    default_project: Path, cookies: Any
) -> None:
    package = default_project.name.replace("-", "_")
    imported = set()
    for path in default_project.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    local = {package, "__future__", *(p.stem for p in (default_project / "tests").rglob("*.py"))}
    dependencies = sorted(imported - set(sys.stdlib_module_names) - local)
    assert dependencies, "found no imports in the default bake"
    accepted = [
        name
        for name in dependencies
        if cookies.bake(extra_context={"package_name": name}).exit_code == 0
    ]
    assert not accepted, f"package_name may shadow these imports: {accepted}"


# Every top-level name a package_name could take (lowercase, digits, underscores) that the
# installed distributions provide, outside the standard library (the hook checks that itself).
INSTALLED_NAMES = """
import json, re, sys
from importlib.metadata import packages_distributions
names = {name for name in packages_distributions() if re.fullmatch("[a-z][a-z0-9_]*", name)
         and not name.endswith("__mypyc")}  # a compiled helper's hashed name, not importable
print(json.dumps(sorted(names - set(sys.stdlib_module_names))))
"""


def test_package_name_may_not_shadow_any_installed_distribution(generated_python: Path) -> None:
    # The virtualenv holds every dependency of a generated project, with all extras.
    installed = json.loads(run([str(generated_python), "-c", INSTALLED_NAMES]))
    assert "sklearn" in installed and "uvloop" in installed, installed
    missing = sorted(set(installed) - hook_constants("DEPENDENCIES")["DEPENDENCIES"])
    assert not missing, f"add these to DEPENDENCIES in hooks/pre_gen_project.py: {missing}"


def test_valid_unusual_answers_pass(bake: Callable[..., Path]) -> None:
    # Quotes and non-ASCII letters reach the hooks intact (they read the answers as JSON).
    project = bake(project_name="Ada's Fraud Detector 2", author_name="Seán O'Brien")
    assert project.name == "ada-s-fraud-detector-2"
    assert (project / "src" / "ada_s_fraud_detector_2").is_dir()
