"""The serving image, run the way each deploy target runs it, without a Docker engine.

A platform does not run the image as `docker run` does on a laptop: Hugging Face Spaces run it
as uid 1000, OpenShift-style platforms as an arbitrary uid, the Kubernetes manifests with a
read-only root filesystem and volumes; each sets $PORT and caps the memory. This module reads the
final stage of the Dockerfile (and of the Space's, built on top of it) and the target's own
files, lays the image's folders out under a fresh directory, and returns how to start the
image's CMD as that platform would: as its uid (setpriv), with its memory limit as the address
space limit (prlimit; a memory cgroup would be closer, but needs one of one's own), its
environment, and writable only where the image or the platform says. Image paths such as
/app/var are mapped to that directory. Standard library and PyYAML only: the template's tests
load this file too.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BASE_ENV = {  # what the python:*-slim base image sets
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
MEBI = {"Mi": 1, "Gi": 1024}
RENDER_FREE = {"port": 10000, "memory_mib": 512}  # render.com/docs/free: PORT, 512 MB
SPACE_CPU_BASIC = {"uid": 1000, "memory_mib": 16 * 1024}  # Spaces run the container as 1000
ARBITRARY_UID = 54321  # any uid and gid the image does not know (OpenShift-style)


class EmulationError(RuntimeError):
    """The Dockerfile or a deploy file uses something this emulation cannot reproduce."""


@dataclass(frozen=True)
class Platform:
    name: str
    uid: int | None  # None: the image's USER
    gid: int | None
    port: int  # the $PORT the platform sets
    memory_mib: int
    env: Mapping[str, str] = field(default_factory=dict)  # set by the platform's own files
    volumes: tuple[str, ...] = ()  # fresh writable folders mounted over the image
    fs_group: int | None = None  # group of those volumes (Kubernetes fsGroup)
    read_only_root: bool = False
    layers: tuple[Path, ...] = ()  # Dockerfiles built FROM the image (the Space's)


@dataclass
class Image:
    env: dict[str, str] = field(default_factory=lambda: dict(BASE_ENV))
    args: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = "0"
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)  # paths copied from a build stage
    steps: list[tuple[str, Any]] = field(default_factory=list)  # ("copy", ...) | ("run", ...)


@dataclass(frozen=True)
class Launch:
    """How to start the image's CMD (and its HEALTHCHECK) as the platform does."""

    platform: Platform
    root: Path  # where the image's folders are laid out
    command: list[str]
    healthcheck: list[str]
    env: dict[str, str]
    cwd: Path
    uid: int
    gid: int


def unavailable() -> str | None:
    """Why this machine cannot run another uid's process, or None when it can."""
    if os.geteuid() != 0:
        return "running the service as another user (setpriv) needs root, e.g. a CI container"
    missing = [tool for tool in ("setpriv", "prlimit") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} not installed (util-linux)" if missing else None


def deploy_targets(project: Path) -> dict[str, Platform]:
    """Every target this bake has files for, as its platform runs the image."""
    targets = {}
    if (manifest := project / "deploy/kubernetes/deployment.yaml").is_file():
        targets["kubernetes"] = _kubernetes(_load(manifest))
    if (blueprint := project / "render.yaml").is_file():
        (service,) = _load(blueprint)["services"]
        env = {item["key"]: str(item["value"]) for item in service.get("envVars", [])}
        targets["render"] = Platform("render", None, None, env=env, **RENDER_FREE)
    if (service := project / "deploy/cloudrun/service.yaml").is_file():
        targets["cloudrun"] = _cloud_run(_load(service))
    if (space := project / "deploy/huggingface").is_dir():
        readme = (space / "README.md").read_text(encoding="utf-8")
        port = int(yaml.safe_load(readme.split("---")[1])["app_port"])  # front matter
        uid, memory = SPACE_CPU_BASIC["uid"], SPACE_CPU_BASIC["memory_mib"]
        layers = (space / "Dockerfile",)
        targets["huggingface"] = Platform("huggingface", uid, uid, port, memory, layers=layers)
    return targets


def _kubernetes(manifest: dict[str, Any]) -> Platform:
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    env = _env(container)
    return Platform(
        "kubernetes",
        context["runAsUser"],
        context.get("runAsGroup", context["runAsUser"]),
        port=int(env.get("PORT", container["ports"][0]["containerPort"])),
        memory_mib=mebibytes(container["resources"]["limits"]["memory"]),
        env=env,
        volumes=tuple(mount["mountPath"] for mount in container.get("volumeMounts", [])),
        fs_group=context.get("fsGroup"),
        read_only_root=bool(context.get("readOnlyRootFilesystem")),
    )


def _cloud_run(service: dict[str, Any]) -> Platform:
    """Cloud Run runs the image's USER; an arbitrary uid, as OpenShift-style platforms use, is
    stricter. Its files are in memory, writable where the image allows."""
    (container,) = service["spec"]["template"]["spec"]["containers"]
    return Platform(
        "cloudrun",
        ARBITRARY_UID,
        ARBITRARY_UID,
        port=int(container["ports"][0]["containerPort"]),  # Cloud Run's $PORT
        memory_mib=mebibytes(container["resources"]["limits"]["memory"]),
        env=_env(container),
    )


def _env(container: dict[str, Any]) -> dict[str, str]:
    """A container's plain variables (those from a secret have no value here)."""
    variables = container.get("env", [])
    return {item["name"]: str(item["value"]) for item in variables if "value" in item}


def mebibytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(Mi|Gi)", str(quantity))
    if not match:
        raise EmulationError(f"memory {quantity!r}: expected e.g. 512Mi or 1Gi")
    return int(match[1]) * MEBI[match[2]]


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@contextmanager
def container(
    platform: Platform,
    *,
    dockerfile: Path,
    context: Path,
    mounts: Mapping[str, Path],
    build_args: Mapping[str, str],
    port: int,
) -> Iterator[Launch]:
    """The image laid out in a fresh directory (removed afterwards), ready to start on `port`
    of this machine (the platform's own port may be taken here). `context` is the build
    context (config.yaml, models/); `mounts` gives the folders built in another stage, such as
    {"/opt/venv": a virtualenv}; `build_args` as `make docker-build` passes them."""
    image = read_image([dockerfile, *platform.layers], build_args)
    missing = set(image.stages) - set(mounts)
    if missing:
        raise EmulationError(f"no folder given for {sorted(missing)}, built in another stage")
    root = shared_directory(f"{platform.name}-image-")
    try:
        yield _lay_out(platform, image, root, context=context, mounts=dict(mounts), port=port)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _lay_out(
    platform: Platform,
    image: Image,
    root: Path,
    *,
    context: Path,
    mounts: dict[str, Path],
    port: int,
) -> Launch:
    tmp = host_path("/tmp", root, mounts)  # the base image's /tmp, writable by anyone
    tmp.mkdir(parents=True)
    tmp.chmod(0o1777)
    host_path(image.workdir, root, mounts).mkdir(parents=True, exist_ok=True)
    for kind, step in image.steps:
        if kind == "copy":
            folder, source, target = step
            _copy((folder or context) / source, host_path(target, root, mounts))
        else:
            _run(step, root, mounts)
    if platform.read_only_root:
        for path in [root, *root.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
    for volume in platform.volumes:  # an emptyDir: empty, 0777, group fsGroup (setgid)
        where = host_path(volume, root, mounts)
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        if platform.fs_group is not None:
            os.chown(where, -1, platform.fs_group)
        where.chmod(0o2777 if platform.fs_group is not None else 0o777)
    user, _, group = image.user.partition(":")
    uid = int(user) if platform.uid is None else platform.uid
    gid = int(group or user) if platform.gid is None else platform.gid
    env = {
        **{key: map_paths(value, root, mounts) for key, value in image.env.items()},
        **platform.env,
        "PORT": str(port),
        "HOME": "/",  # as Docker sets it for a uid the image has no home for
        "TMPDIR": str(tmp),
    }
    limit = ["prlimit", f"--as={platform.memory_mib * 2**20}"]
    as_user = as_user_command(uid, gid)
    return Launch(
        platform=platform,
        root=root,
        command=[*limit, *as_user, *image.cmd],
        healthcheck=[*as_user, *image.healthcheck],
        env=env,
        cwd=host_path(image.workdir, root, mounts),
        uid=uid,
        gid=gid,
    )


def shared_directory(prefix: str) -> Path:
    """A new directory the platforms' users can enter (/tmp: pytest's own temporary folders
    and mkdtemp's 0700 would hide it); the caller removes it."""
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    directory.chmod(0o755)
    return directory


def as_user_command(uid: int, gid: int) -> list[str]:
    """The prefix that runs a command as `uid`:`gid`, without root's capabilities. setpriv
    still has them when it starts the command, so a shell in between starts it as the user
    would (else a program in a folder only root can open would start anyway)."""
    setpriv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs"]
    return [*setpriv, "--", "/bin/sh", "-c", 'exec "$0" "$@"']


def python_for(uid: int, version: str, also: Path | None = None) -> Path | None:
    """A Python `version` (e.g. "3.11") that `uid` can run: `also`, else the system's. One
    under root's home (pyenv, uv) starts, but cannot read its own standard library."""
    name = f"python{version}"
    candidates = [also, *(Path(folder, name) for folder in ("/usr/local/bin", "/usr/bin"))]
    for python in filter(None, candidates):
        if not python.is_file():
            continue
        probe = [*as_user_command(uid, uid), str(python), "-c", "import json"]
        if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
            return python
    return None


def read_image(dockerfiles: list[Path], build_args: Mapping[str, str]) -> Image:
    """The final stage of the first Dockerfile, then each further one built FROM it."""
    image = Image()
    for dockerfile in dockerfiles:
        for word, rest in _last_stage(dockerfile):
            _apply(image, dockerfile, word, rest, build_args, first=dockerfile == dockerfiles[0])
    if not image.cmd:
        raise EmulationError(f"{dockerfiles[0]}: no CMD")
    return image


def _last_stage(dockerfile: Path) -> list[tuple[str, str]]:
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    stage: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        word, _, rest = line.strip().partition(" ")
        stage = [] if word.upper() == "FROM" else stage
        stage.append((word.upper(), rest.strip()))
    return stage


def _apply(
    image: Image,
    dockerfile: Path,
    word: str,
    rest: str,
    build_args: Mapping[str, str],
    *,
    first: bool,
) -> None:
    if word in ("FROM", "LABEL", "EXPOSE"):
        return
    if word == "ARG":
        name, _, default = rest.partition("=")
        image.args[name] = build_args.get(name, default.strip("\"'"))
    elif word == "ENV":
        for pair in shlex.split(rest):
            key, _, value = pair.partition("=")
            image.env[key] = expand(value, {**image.args, **image.env})
    elif word == "WORKDIR":
        image.workdir = posixpath.join(image.workdir, rest)
    elif word == "USER":
        image.user = rest
    elif word == "COPY":  # the first Dockerfile's context is given; a layer's is its folder
        _copy_instruction(image, rest, None if first else dockerfile.parent)
    elif word == "RUN":
        image.steps.append(("run", rest))
    elif word == "CMD":
        image.cmd = json.loads(rest)
    elif word == "HEALTHCHECK":
        image.healthcheck = json.loads(rest.partition(" CMD ")[2])
    else:
        raise EmulationError(f"{dockerfile}: cannot emulate {word} {rest}")


def _copy_instruction(image: Image, arguments: str, context: Path | None) -> None:
    """COPY from a build context is a step; COPY --from=<stage> a folder given by the caller."""
    *flags, source, target = shlex.split(arguments)
    target = posixpath.join(image.workdir, target)
    if any(flag.startswith("--from=") for flag in flags):
        image.stages.append(target)
    else:
        image.steps.append(("copy", (context, source, target)))


def expand(value: str, variables: Mapping[str, str]) -> str:
    """$NAME and ${NAME} as Docker substitutes them (unknown: empty)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2], ""), value)


def host_path(path: str, root: Path, mounts: Mapping[str, Path]) -> Path:
    """Where an absolute image path lives here: under a mount, else under `root`."""
    for mount in sorted(mounts, key=len, reverse=True):
        if path == mount or path.startswith(mount.rstrip("/") + "/"):
            return Path(mounts[mount], posixpath.relpath(path, mount))
    return root / path.lstrip("/")


def map_paths(value: str, root: Path, mounts: Mapping[str, Path]) -> str:
    """An ENV value with its image paths (under a mount or a folder of `root`) mapped."""
    prefixes = [*mounts, *(f"/{entry.name}" for entry in root.iterdir())]
    if not prefixes:
        return value
    alternatives = "|".join(re.escape(p) for p in sorted(prefixes, key=len, reverse=True))
    pattern = rf"(?<![\w.]){'(?:' + alternatives + ')'}(?=/|:|$)"
    return re.sub(pattern, lambda m: str(host_path(m[0], root, mounts)), value)


def _copy(source: Path, target: Path) -> None:
    """COPY: owned by root, readable by anyone."""
    if source.is_dir():
        shutil.copytree(source, target)
        copied = [target, *target.rglob("*")]
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        copied = [Path(shutil.copy2(source, target / source.name if target.is_dir() else target))]
    for path in copied:
        path.chmod(0o755 if path.is_dir() else 0o644)


def _run(command: str, root: Path, mounts: Mapping[str, Path]) -> None:
    """The commands a Dockerfile uses to prepare folders; anything else is refused."""
    for part in command.split("&&"):
        name, *words = shlex.split(part.replace("--mode=", "-m ").replace("--parents", "-p"))
        if name in ("groupadd", "useradd"):
            continue  # users are numeric everywhere below (USER, chown)
        mode = words.pop(words.index("-m") + 1) if "-m" in words else None
        operands = [word for word in words if not word.startswith("-")]
        if name == "mkdir":
            for path in operands:
                where = host_path(path, root, mounts)
                where.mkdir(parents="-p" in words, exist_ok="-p" in words)
                where.chmod(int(mode, 8) if mode else 0o755)
        elif name == "chmod":
            mode, *paths = operands
            for path in paths:
                host_path(path, root, mounts).chmod(int(mode, 8))
        elif name == "chown":
            owner, *paths = operands
            user, _, group = owner.partition(":")
            for path in paths:
                os.chown(host_path(path, root, mounts), int(user), int(group or user))
        else:
            raise EmulationError(f"cannot emulate RUN {part.strip()}: only mkdir, chmod, chown")
