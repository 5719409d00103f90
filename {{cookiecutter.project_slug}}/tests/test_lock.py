"""The image installs exactly what requirements/serve.txt locks, and that lock matches pyproject.

Editing the dependencies or the `serve` extra without `make lock` fails here, before the
Docker build does.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "serve.txt"
# A locked package: "name==version [; markers]" then its hashes, one per continuation line.
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)(.*?)\\?$")


def locked() -> dict[str, list[tuple[Version, int]]]:
    """Package -> every (version, number of hashes) the lock pins for it (one per marker)."""
    pins: dict[str, list[tuple[Version, int]]] = {}
    current: list[tuple[Version, int]] | None = None
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if match := PIN.match(line):
            current = pins.setdefault(canonicalize_name(match[1]), [])
            current.append((Version(match[2]), 0))
        elif line.strip().startswith("--hash=sha256:") and current:
            version, hashes = current[-1]
            current[-1] = (version, hashes + 1)
    return pins


def serve_requirements() -> list[Requirement]:
    """What pyproject.toml asks for in the image: the dependencies and the `serve` extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["serve"]
    return [Requirement(line) for line in wanted]


def test_every_serve_requirement_is_locked_at_an_allowed_version() -> None:
    pins = locked()
    for requirement in serve_requirements():
        versions = [version for version, _ in pins.get(canonicalize_name(requirement.name), [])]
        assert versions, f"{requirement.name} is not in {LOCK.name}: run `make lock`"
        for version in versions:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{LOCK.name} pins {requirement.name}=={version}, pyproject.toml wants "
                f"{requirement}: run `make lock`"
            )


def test_every_locked_package_has_a_hash() -> None:
    pins = locked()
    assert len(pins) >= len(serve_requirements())
    unhashed = [name for name, entries in pins.items() if any(n == 0 for _, n in entries)]
    assert unhashed == []


def test_the_image_installs_the_lock_with_hashes_required() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    assert "COPY requirements/serve.txt" in dockerfile
    assert re.search(r"pip [^\n]*install [^\n]*--require-hashes +-r serve.txt", dockerfile)
    assert "!requirements/serve.txt" in (ROOT / ".dockerignore").read_text(encoding="utf-8")
