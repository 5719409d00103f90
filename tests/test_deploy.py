"""The deploy files of a bake: Kubernetes manifests, the Render Blueprint, the Cloud Run
service and `make deploy-cloudrun`, the Space files, the image's labels.

Each is checked against what the rest of the bake says: the routes the app serves, the port
and log path of the image, the registry CD pushes to.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import AXES, OPTIONS, TEMPLATE, run, tool

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
    log_url = dockerfile_env(project)["ML_PREDICTION_LOG__URL"]
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


CLOUD_RUN = Path("deploy/cloudrun/service.yaml")
# A stand-in for docker and gcloud: records each call; `gcloud run services replace FILE` keeps
# the file it was given and prints the service's URL, as gcloud does with that --format.
RECORDER = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CALLS"
if [ "$1 $2 $3" = "run services replace" ]; then
    cp "$4" "$CALLS.yaml"
    echo https://tumor-classifier-123456.europe-west1.run.app
fi
"""


@pytest.fixture(scope="module")
def cloud_run_project(bake: Callable[..., Path]) -> Path:
    return bake(deploy="cloudrun", repository_owner="Ada-Lovelace")


def cloud_run_container(service: dict[str, Any]) -> dict[str, Any]:
    (only,) = service["spec"]["template"]["spec"]["containers"]
    return dict(only)


def test_cloud_run_service_scales_to_zero_in_the_free_tier_and_probes_the_apps_routes(
    cloud_run_project: Path,
) -> None:
    service = load(cloud_run_project / CLOUD_RUN)
    assert (service["apiVersion"], service["kind"]) == ("serving.knative.dev/v1", "Service")
    assert service["metadata"]["name"] == cloud_run_project.name
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/minScale"] == "0"
    # CPU only during requests: request-based billing, the one the free tier covers.
    assert annotations["run.googleapis.com/cpu-throttling"] == "true"
    container = cloud_run_container(service)
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
    assert mebibytes(container["resources"]["limits"]["memory"]) > MEASURED_WORKER_MIB
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["WORKERS"] == "1", "512Mi is sized for one worker"
    assert "PORT" not in env, "Cloud Run sets PORT itself, from containerPort"
    assert container["startupProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert {"/ready", "/health"} <= routes(cloud_run_project)
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] <= 240  # Cloud Run's maximum


def test_cloud_run_limits_follow_the_services_own_settings(cloud_run_project: Path) -> None:
    serving = load(cloud_run_project / "config.yaml")["serving"]
    service = load(cloud_run_project / CLOUD_RUN)
    spec = service["spec"]["template"]["spec"]
    env = {item["name"]: item.get("value") for item in cloud_run_container(service)["env"]}
    # An instance takes what its workers take before they would answer 503 themselves.
    assert spec["containerConcurrency"] == serving["max_concurrency"] * int(env["WORKERS"])
    # Cloud Run waits a little longer than the service, which answers 408/503 itself.
    assert serving["request_timeout"] < spec["timeoutSeconds"] <= serving["request_timeout"] + 10


@pytest.fixture
def recorded(cloud_run_project: Path, tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A copy of the project, the file the calls go to, and a PATH whose docker and gcloud
    only record them."""
    project = tmp_path / "project"
    shutil.copytree(cloud_run_project, project)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("docker", "gcloud"):
        (bin_dir / name).write_text(RECORDER)
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS": str(calls)}
    return project, calls, env


def test_make_deploy_cloudrun_pushes_the_commits_image_and_applies_the_service(
    recorded: tuple[Path, Path, dict[str, str]],
) -> None:
    """What CD runs, with nothing filled in by hand: the commit's image goes to the project's
    Artifact Registry, and the service file with that image and the project is applied."""
    project, calls, env = recorded
    answers = ["GCP_PROJECT=ada-ml", "GCP_REGION=europe-west1", "TAG=abc123"]
    output = run(
        ["make", "deploy-cloudrun", "IMAGE_NAME=ghcr.io/ada/x", *answers], cwd=project, env=env
    )
    image = "europe-west1-docker.pkg.dev/ada-ml/tumor-classifier/tumor-classifier:abc123"
    where = "--project=ada-ml --region=europe-west1"
    assert calls.read_text().splitlines() == [
        "gcloud auth configure-docker europe-west1-docker.pkg.dev --quiet",
        f"docker tag ghcr.io/ada/x:abc123 {image}",
        f"docker push {image}",
        f"gcloud run services replace build/cloudrun-service.yaml {where}"
        " --format=value(status.url)",
        f"gcloud run services add-iam-policy-binding tumor-classifier {where} --member=allUsers"
        " --role=roles/run.invoker --quiet",
    ]
    applied = Path(f"{calls}.yaml").read_text(encoding="utf-8")
    assert "${" not in applied, "a placeholder was left in the applied service"
    spec = yaml.safe_load(applied)["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == image
    assert spec["serviceAccountName"] == "serving@ada-ml.iam.gserviceaccount.com"
    url = "https://tumor-classifier-123456.europe-west1.run.app"
    assert (project / "build" / "cloudrun-url").read_text().strip() == url  # what CD smoke-checks
    assert url in output


def test_make_deploy_cloudrun_without_a_project_says_what_to_set(
    recorded: tuple[Path, Path, dict[str, str]],
) -> None:
    project, calls, env = recorded
    done = subprocess.run(
        ["make", "deploy-cloudrun"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "Set GCP_PROJECT to your Google Cloud project id" in done.stderr
    assert not calls.exists(), "nothing may run without a project"


def test_hugging_face_is_labelled_paid_and_never_free(bake: Callable[..., Path]) -> None:
    """Docker Spaces need a paid plan to create (PRO for a personal account, since July 2026)."""
    prompt = OPTIONS["__prompts__"]["deploy"]
    readme = (TEMPLATE / "README.md").read_text(encoding="utf-8")
    (row,) = [line for line in readme.splitlines() if line.startswith("| `deploy` |")]
    for text in (prompt, row):
        choice = text[text.index("huggingface") : text.index("none")]  # its part of the line
        assert "paid" in choice and "free" not in choice, choice
    for ci in AXES["ci"]:
        project = bake(deploy="huggingface", ci=ci)
        guide = (project / "docs" / "operations" / "deploy.md").read_text(encoding="utf-8")
        assert "## Hugging Face Spaces (paid)" in guide
        free = re.compile(r"\bfree\b", re.IGNORECASE)
        spaces = re.compile(r"hugging ?face|\bspaces?\b", re.IGNORECASE)
        offending = [  # paragraphs (or comment blocks) that speak of a Space and say free
            f"{path.relative_to(project)}: {paragraph.strip()[:300]}"
            for path in project.rglob("*")
            if path.is_file() and path.suffix in {".md", ".yml", ".yaml", ".toml", ""}
            for paragraph in path.read_text(encoding="utf-8", errors="replace").split("\n\n")
            if spaces.search(paragraph) and free.search(paragraph)
        ]
        assert not offending, "\n".join(offending)
