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


if __name__ == "__main__":
    if not ANSWERS["include_docker"]:
        remove("Dockerfile", ".dockerignore")
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
