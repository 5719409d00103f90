"""The deploy files of a bake: Kubernetes manifests, the Render Blueprint, the Space files,
the image's labels.

Each is checked against what the rest of the bake says: the routes the app serves, the port
and log path of the image, the registry CD pushes to.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import TEMPLATE, run, tool

KUBERNETES = Path("deploy/kubernetes")
# Render's published Blueprint schema (source and date: tests/schemas/README.md).
RENDER_SCHEMA = TEMPLATE / "tests" / "schemas" / "render.yaml.json"
MEASURED_WORKER_MIB = 140  # resident memory of one served worker of the default bake
MEBI = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def routes(project: Path) -> set[str]:
    """The paths the generated app serves, from its route decorators (wherever they live)."""
    found = set()
    for path in (project / "src").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        found |= set(re.findall(r"\.(?:get|post)\(\s*\"(/[^\"]*)\"", source))
    return found


def source_constant(project: Path, name: str) -> int:
    for path in (project / "src").rglob("*.py"):
        if match := re.search(rf"^{name} = (\d+)", path.read_text(encoding="utf-8"), re.M):
            return int(match.group(1))
    pytest.fail(f"{name} not found in the generated source")


def dockerfile_env(project: Path) -> dict[str, str]:
    text = (project / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    pairs = [line.split(None, 1)[1] for line in text.splitlines() if line.startswith("ENV ")]
    return dict(item.split("=", 1) for pair in pairs for item in pair.split())


def mebibytes(quantity: str) -> float:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", quantity)
    assert match, f"unexpected memory quantity {quantity!r}"
    return int(match.group(1)) * MEBI[match.group(2)]


def image_of_cd(answers: dict[str, Any]) -> str:
    """The image name CD pushes: the repository's own registry, lowercase."""
    registry = "registry.gitlab.com" if answers.get("ci") == "gitlab" else "ghcr.io"
    return f"{registry}/{answers['repository_owner'].lower()}/tumor-classifier"


@pytest.fixture(scope="module")
def project(bake: Callable[..., Path]) -> Path:
    return bake(repository_owner="Ada-Lovelace")


@pytest.fixture(scope="module")
def deployment(project: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = load(project / KUBERNETES / "deployment.yaml")
    return manifest


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def test_kubernetes_manifests_match_the_kubernetes_schemas(project: Path) -> None:
    manifests = sorted(str(path) for path in (project / KUBERNETES).glob("*.yaml"))
    resources = [path for path in manifests if not path.endswith("kustomization.yaml")]
    run([tool("kubernetes-validate"), "--strict", "--quiet", *resources])


def test_kustomization_renders_into_valid_manifests_with_the_registry_image(
    project: Path, tmp_path: Path
) -> None:
    # kubectl (from tests/requirements.txt) renders kustomizations offline, as `apply -k` does.
    rendered = run([tool("kubectl"), "kustomize", str(project / KUBERNETES)])
    (tmp_path / "rendered.yaml").write_text(rendered)
    run([tool("kubernetes-validate"), "--strict", "--quiet", str(tmp_path / "rendered.yaml")])
    documents = list(yaml.safe_load_all(rendered))
    assert sorted(doc["kind"] for doc in documents) == [
        "Deployment", "HorizontalPodAutoscaler", "Service",
    ]  # fmt: skip
    (deployment,) = [doc for doc in documents if doc["kind"] == "Deployment"]
    expected = image_of_cd({"repository_owner": "Ada-Lovelace"})
    assert container(deployment)["image"] == f"{expected}:latest"


def test_kustomization_lists_every_manifest_and_names_the_deployments_image(
    project: Path, deployment: dict[str, Any]
) -> None:
    kustomization = load(project / KUBERNETES / "kustomization.yaml")
    listed = set(kustomization["resources"])
    on_disk = {path.name for path in (project / KUBERNETES).glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    (image,) = kustomization["images"]
    assert image["name"] == container(deployment)["image"]


def test_probes_ask_routes_the_app_serves(project: Path, deployment: dict[str, Any]) -> None:
    api = container(deployment)
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert api["startupProbe"]["httpGet"]["path"] == "/health"
    assert {"/health", "/ready"} <= routes(project)
    ports = {port["name"]: port["containerPort"] for port in api["ports"]}
    assert all(
        api[probe]["httpGet"]["port"] in ports for probe in ("livenessProbe", "readinessProbe")
    )


def test_pod_listens_where_the_image_does(project: Path, deployment: dict[str, Any]) -> None:
    api = container(deployment)
    exposed = re.search(r"^EXPOSE (\d+)", (project / "Dockerfile").read_text(), re.M)
    assert exposed, "the Dockerfile exposes no port"
    env = {item["name"]: item.get("value") for item in api["env"]}
    assert [port["containerPort"] for port in api["ports"]] == [int(exposed.group(1))]
    assert env["PORT"] == exposed.group(1)


def test_pod_outlives_the_servers_drain(project: Path, deployment: dict[str, Any]) -> None:
    spec = deployment["spec"]["template"]["spec"]
    pre_stop = int(container(deployment)["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = source_constant(project, "GRACEFUL_SHUTDOWN_SECONDS")
    assert spec["terminationGracePeriodSeconds"] > pre_stop + drain


def test_pod_has_room_for_a_measured_worker(deployment: dict[str, Any]) -> None:
    resources = container(deployment)["resources"]
    assert mebibytes(resources["requests"]["memory"]) >= MEASURED_WORKER_MIB
    assert mebibytes(resources["limits"]["memory"]) > mebibytes(resources["requests"]["memory"])
    env = {item["name"]: item.get("value") for item in container(deployment)["env"]}
    assert env["WORKERS"] == "1", "the requests are sized for one worker per pod"


def test_pod_is_non_root_with_a_read_only_root_and_a_writable_log(
    project: Path, deployment: dict[str, Any]
) -> None:
    pod, api = deployment["spec"]["template"]["spec"], container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert "USER 10001:10001" in (project / "Dockerfile").read_text()
    assert api["securityContext"]["readOnlyRootFilesystem"] is True
    assert api["securityContext"]["allowPrivilegeEscalation"] is False
    # The image's SQLite prediction log must land on a writable volume.
    log_url = dockerfile_env(project)["ML_SERVING__PREDICTION_LOG_URL"]
    log_dir = str(Path(log_url.removeprefix("sqlite:///")).parent)
    mounts = {mount["mountPath"] for mount in api["volumeMounts"]}
    assert log_dir in mounts
    assert "/tmp" in mounts


@pytest.mark.parametrize("ci", ["github", "gitlab"])
def test_render_blueprint_matches_renders_schema_and_runs_the_pushed_image(
    bake: Callable[..., Path], ci: str
) -> None:
    answers = {"ci": ci, "deploy": "render", "repository_owner": "ada"}
    project = bake(**answers)
    run(
        [tool("check-jsonschema"), "--schemafile", str(RENDER_SCHEMA), str(project / "render.yaml")]
    )
    # What the schema cannot know: the image CD pushes, a route the app serves, the free plan.
    (service,) = load(project / "render.yaml")["services"]
    assert (service["type"], service["runtime"], service["plan"]) == ("web", "image", "free")
    assert service["image"]["url"] == f"{image_of_cd(answers)}:latest"
    assert service["healthCheckPath"] == "/ready"
    assert service["healthCheckPath"] in routes(project)
    # Render sets PORT itself: the Blueprint must not pin another one.
    assert "PORT" not in {item["key"] for item in service.get("envVars", [])}


def test_the_render_schema_refuses_a_misspelt_key(default_project: Path, tmp_path: Path) -> None:
    """The vendored schema is strict: a key Render does not know fails, as Render's sync would."""
    blueprint = (default_project / "render.yaml").read_text(encoding="utf-8")
    misspelt = tmp_path / "render.yaml"
    misspelt.write_text(blueprint.replace("healthCheckPath:", "healthcheckPath:"))
    command = [tool("check-jsonschema"), "--schemafile", str(RENDER_SCHEMA), str(misspelt)]
    assert subprocess.run(command, capture_output=True, check=False).returncode == 1


def test_space_serves_the_pushed_image_on_its_app_port(bake: Callable[..., Path]) -> None:
    project = bake(deploy="huggingface", repository_owner="ada")
    space = project / "deploy" / "huggingface"
    readme = (space / "README.md").read_text(encoding="utf-8")
    front_matter = yaml.safe_load(readme.split("---\n")[1])
    assert front_matter["sdk"] == "docker"
    lines = (space / "Dockerfile").read_text(encoding="utf-8").splitlines()
    # CD rewrites the one FROM line with the commit's tag: there must be exactly one.
    froms = [line for line in lines if line.startswith("FROM ")]
    assert froms == [f"FROM {image_of_cd({'repository_owner': 'ada'})}:latest"]
    assert f"ENV PORT={front_matter['app_port']}" in lines
    run([tool("hadolint"), str(space / "Dockerfile")], cwd=project)


def test_the_image_serves_only_the_bundle_it_was_built_with(project: Path) -> None:
    """`make docker-build` passes the sha256 of models/metadata.json, which the image sets as
    ML_SERVING__MODEL_SHA256: the service refuses any other bundle (the real refusal is a test
    of the generated project)."""
    metadata = project / "models" / "metadata.json"
    metadata.parent.mkdir(exist_ok=True)
    metadata.write_text('{"version": "1"}')
    try:
        dry_run = run(["make", "-n", "docker-build"], cwd=project)
    finally:
        metadata.unlink()
        metadata.parent.rmdir()

    digest = hashlib.sha256(b'{"version": "1"}').hexdigest()
    assert f"--build-arg MODEL_SHA256={digest} " in dry_run
    assert "ARG MODEL_SHA256" in (project / "Dockerfile").read_text(encoding="utf-8")
    assert dockerfile_env(project)["ML_SERVING__MODEL_SHA256"] == "${MODEL_SHA256}"


def image_labels(project: Path) -> dict[str, str]:
    """The final image's LABELs, unquoted as Docker reads them."""
    text = (project / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    (labels,) = [line for line in text.splitlines() if line.startswith("LABEL ")]
    pairs = [pair.split("=", 1) for pair in shlex.split(labels.removeprefix("LABEL "))]
    # Then Docker's variable substitution: \$ is a literal $, any other $NAME an (unset) variable.
    docker = re.compile(r"\\\$|\$\{?\w*\}?")
    return {key: docker.sub(lambda m: "$" if m[0] == "\\$" else "", value) for key, value in pairs}


@pytest.mark.parametrize(
    ("ci", "license", "spdx", "host"),
    [
        ("github", "MIT", "MIT", "github.com"),
        ("gitlab", "Proprietary", "LicenseRef-Proprietary", "gitlab.com"),
    ],
)
def test_image_labels_link_the_package_to_its_repository(
    bake: Callable[..., Path], ci: str, license: str, spdx: str, host: str
) -> None:
    """GitHub connects a pushed package to the repository its source label names."""
    description = 'Say "hi" for $5 \\o/'  # quotes, a variable sign, a backslash
    answers = {"ci": ci, "license": license, "description": description}
    project = bake(repository_owner="Ada-Lovelace", **answers)
    assert image_labels(project) == {
        "org.opencontainers.image.source": f"https://{host}/ada-lovelace/tumor-classifier",
        "org.opencontainers.image.description": description,
        "org.opencontainers.image.licenses": spdx,
    }
    run([tool("hadolint"), str(project / "Dockerfile")], cwd=project)
