"""A baked project records its template and answers, and `cruft update` brings in later fixes."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import TEMPLATE, run, tool

# The last commit before the generated package was grouped into pipeline/, serving/ and
# monitoring/: an update from there moves files, edits others and adds new ones.
EARLIER_COMMIT = "66d53657eeac89ada92ec840eb43046bda9746fa"
GIT_USER = {
    "GIT_AUTHOR_NAME": "Learner",
    "GIT_AUTHOR_EMAIL": "learner@example.com",
    "GIT_COMMITTER_NAME": "Learner",
    "GIT_COMMITTER_EMAIL": "learner@example.com",
}


def git(project: Path, *args: str) -> str:
    return run(["git", *args], cwd=project, env={**os.environ, **GIT_USER})


def head_commit() -> str:
    return git(TEMPLATE, "rev-parse", "HEAD").strip()


def test_every_bake_records_template_commit_and_answers(bake: Callable[..., Path]) -> None:
    project = bake(task="regression")
    state = json.loads((project / ".cruft.json").read_text())
    assert state["template"] == str(TEMPLATE)
    assert state["commit"] == head_commit()
    answers = state["context"]["cookiecutter"]
    assert answers["task"] == "regression"
    assert answers["_commit"] == state["commit"]
    assert not {"_output_dir", "_repo_dir"} & set(answers), "machine-specific paths recorded"


def test_cruft_update_applies_the_template_changes_and_keeps_user_edits(tmp_path: Path) -> None:
    found = ["git", "-C", str(TEMPLATE), "cat-file", "-e", EARLIER_COMMIT]
    if subprocess.run(found, capture_output=True, check=False).returncode:
        pytest.fail(f"{EARLIER_COMMIT} is not in this clone: clone with full history")
    cruft = tool("cruft")
    run([cruft, "create", str(TEMPLATE), "--checkout", EARLIER_COMMIT, "--no-input",
         "--output-dir", str(tmp_path)])  # fmt: skip
    project = tmp_path / "tumor-classifier"
    package = project / "src" / "tumor_classifier"
    assert (package / "train.py").is_file(), "the earlier layout"
    git(project, "init", "--quiet")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", "Bake")
    # The learner's own work: a changed setting and a module of their own.
    config = (project / "config.yaml").read_text()
    (project / "config.yaml").write_text(config.replace("random_state: 42", "random_state: 7"))
    (package / "extra_features.py").write_text('"""My own features."""\n')
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", "My changes")

    run([cruft, "update", "--skip-apply-ask", "--project-dir", str(project)])

    state = json.loads((project / ".cruft.json").read_text())
    assert state["commit"] == head_commit()
    assert (package / "pipeline" / "train.py").is_file() and not (package / "train.py").exists()
    assert "random_state: 7" in (project / "config.yaml").read_text()
    assert (package / "extra_features.py").is_file()
    leftovers = [p.name for p in project.rglob("*") if p.suffix in {".rej", ".orig"}]
    assert not leftovers, f"conflicts left: {leftovers}"
    run([cruft, "check", "--project-dir", str(project)])
