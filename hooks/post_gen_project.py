"""Remove the parts of the generated project that the answers switched off, record which
template, commit and answers made it (.cruft.json), so that `cruft update` can bring in later
template fixes, and say what to run next."""

import json
import os
import shutil
import subprocess
from pathlib import Path

# Every answer, with its real type (booleans stay booleans). Single quotes: the JSON has double.
ANSWERS = json.loads(r'{{ cookiecutter | tojson }}')  # fmt: skip
PACKAGE = f"src/{ANSWERS['package_name']}"


def remove(*paths: str) -> None:
    """Delete files or whole directories; a path that is already gone is fine."""
    for path in map(Path, paths):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def git(repo: Path, *args: str) -> str | None:
    """Output of a git command in `repo`, or None when it is not a git checkout."""
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:  # no git installed
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def template_source() -> tuple[str, str | None]:
    """The template as `cruft update` can fetch it again (a git URL or an absolute path), and
    its commit. A relative path is relative to where cookiecutter was started, not to here."""
    if "_commit" in ANSWERS:  # cruft itself is baking: it knows both
        return str(ANSWERS["_template"]), str(ANSWERS["_commit"])
    repo = Path(ANSWERS["_repo_dir"])
    if not repo.is_absolute():
        repo = Path(os.environ.get("PWD") or Path.cwd(), repo).resolve()
    if ANSWERS["_template"] == ANSWERS["_repo_dir"]:  # a local folder, used where it is
        source = str(repo)
    else:  # cloned from a URL or an abbreviation such as gh:owner/name
        source = git(repo, "remote", "get-url", "origin") or str(ANSWERS["_template"])
    return source, git(repo, "rev-parse", "HEAD")


def write_cruft_state() -> None:
    """.cruft.json in the format cruft writes itself: template, commit and every answer."""
    source, commit = template_source()
    machine_specific = {"_output_dir", "_repo_dir", "_checkout"}
    answers = {k: v for k, v in ANSWERS.items() if k not in machine_specific}
    answers.update(_template=source, _commit=commit)
    state = {
        "template": source,
        "commit": commit,
        "checkout": None,
        "context": {"cookiecutter": answers},
        "directory": None,
    }
    Path(".cruft.json").write_text(json.dumps(state, indent=2, ensure_ascii=False) + "\n")


def next_steps() -> str:
    """The commands to run now. `cd` takes the folder's name when the bake was made here (the
    usual case), else its full path."""
    here = os.environ.get("PWD")
    folder = Path.cwd()
    if here and Path(here).resolve() == Path(ANSWERS["_output_dir"]).resolve():
        folder = Path(folder.name)
    return f"""
Created {folder}. Next:

    cd {folder}
    make install    # a .venv with everything the project needs (a minute or two)
    make demo       # the whole loop: data, training, the API, a few requests, then it stops

or one stage at a time:

    make train      # data -> model -> MLflow -> models/
    make serve      # the API, with its docs on http://127.0.0.1:8000/docs

{folder / "README.md"} explains each step; `make help` lists them all."""


def keep_one(chosen: Path, variants: list[Path], final: Path) -> None:
    """Keep the variant of the chosen answer under its final name; delete the others."""
    for variant in variants:
        if variant == chosen:
            variant.rename(final)
        else:
            variant.unlink()


def ci_on_every_push(ci: Path) -> None:
    """Without CD, CI runs on pushes to main too (with CD, cd.yml runs it there first)."""
    if ci.is_file():
        lines = ci.read_text().splitlines(keepends=True)
        ci.write_text("".join(line for line in lines if "branches-ignore: [main]" not in line))


if __name__ == "__main__":
    write_cruft_state()
    deploy = ANSWERS["deploy"]
    # The image is what every deploy target runs: without Docker there is nothing to deploy.
    if not ANSWERS["include_docker"]:
        remove(
            "Dockerfile", ".dockerignore", "requirements", "deploy",
            "tests/test_lock.py", "tests/platforms.py", "tests/test_platforms.py",
        )  # fmt: skip
    if deploy != "render":
        remove("render.yaml")
    if deploy != "cloudrun":
        remove("deploy/cloudrun")
    if deploy != "huggingface":
        remove("deploy/huggingface")
    # One CD workflow per target (workflows are copied, not rendered): keep the chosen one.
    workflows = Path(".github/workflows")
    variants = sorted(workflows.glob("cd-*.yml"))
    if deploy == "none":
        remove(*map(str, variants))
        ci_on_every_push(workflows / "ci.yml")
    else:
        keep_one(workflows / f"cd-{deploy}.yml", variants, workflows / "cd.yml")
    # The scheduled loop: `make monitor` alone, or the Prefect flow that also retrains.
    monitors = [workflows / "monitor.yml", workflows / "monitor-prefect.yml"]
    keep_one(monitors[ANSWERS["orchestrator"] != "none"], monitors, workflows / "monitor.yml")
    if not ANSWERS["include_monitoring"]:
        remove(f"{PACKAGE}/monitoring", "tests/monitoring", ".github/workflows/monitor.yml")
        remove("docs/operations/monitoring.md", "docs/decisions/0006-drift-thresholds.md")
    if ANSWERS["orchestrator"] == "none":
        remove(f"{PACKAGE}/orchestration", "tests/orchestration", "prefect.yaml", "deploy/prefect")
        remove("docs/operations/orchestration.md")
    if not ANSWERS["include_docker"]:  # the Kubernetes jobs of prefect.yaml run the training image
        remove("prefect.yaml")
    if ANSWERS["ci"] != "github":
        remove(".github")
    if ANSWERS["ci"] != "gitlab":
        remove(".gitlab-ci.yml")
    if ANSWERS["license"] == "Proprietary":
        remove("LICENSE")
    if "_commit" not in ANSWERS:  # cruft bakes its updates in a temporary folder: not there
        print(next_steps())
