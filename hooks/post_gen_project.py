"""Remove the parts of the generated project that the answers switched off."""

import json
import shutil
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


def keep_one(chosen: Path, variants: list[Path], final: Path) -> None:
    """Keep the variant of the chosen answer under its final name; delete the others."""
    for variant in variants:
        if variant == chosen:
            variant.rename(final)
        else:
            variant.unlink()


if __name__ == "__main__":
    deploy = ANSWERS["deploy"]
    # The image is what every deploy target runs: without Docker there is nothing to deploy.
    if not ANSWERS["include_docker"]:
        remove("Dockerfile", ".dockerignore", "deploy")
    if deploy != "render":
        remove("render.yaml")
    if deploy != "huggingface":
        remove("deploy/huggingface")
    # One CD workflow per target (workflows are copied, not rendered): keep the chosen one.
    workflows = Path(".github/workflows")
    variants = sorted(workflows.glob("cd-*.yml"))
    if deploy == "none":
        remove(*map(str, variants))
    else:
        keep_one(workflows / f"cd-{deploy}.yml", variants, workflows / "cd.yml")
    if not ANSWERS["include_monitoring"]:
        remove(
            f"{PACKAGE}/monitor.py",
            f"{PACKAGE}/simulate.py",
            "tests/test_monitor.py",
            "tests/test_simulate.py",
            ".github/workflows/monitor.yml",
        )
    if ANSWERS["ci"] != "github":
        remove(".github")
    if ANSWERS["ci"] != "gitlab":
        remove(".gitlab-ci.yml")
    if ANSWERS["license"] == "Proprietary":
        remove("LICENSE")
