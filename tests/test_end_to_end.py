"""End to end on the default project: real processes, real ports, real files.

The tests run in order, as a learner would: install, train, serve, send traffic, monitor,
shut down. Each stage is the project's own `make` target.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from helpers import AXES, load_platforms, load_service_process, run, tool

pytestmark = pytest.mark.e2e


process = load_service_process()


class Server:
    """A prediction service on a free port, started in its own process group."""

    def __init__(self, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.cwd, self.env, self.log = cwd, env, log
        self.port = process.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.rows_sent = 0

    def start(self, command: list[str], timeout: float = 180) -> None:
        self.process = process.start(command, cwd=self.cwd, env=self.env, log_file=self.log)
        try:
            process.wait_until_ready(self.process, f"{self.url}/ready", timeout=timeout)
        except process.ServiceProcessError as exc:
            pytest.fail(f"{exc}\n{self.output()}")

    def output(self) -> str:
        """The log's errors first (a 503 loop would push them out of the tail), then its end."""
        text = self.log.read_text(errors="replace")
        errors = [line for line in text.splitlines() if " ERROR " in line][:10]
        return "\n".join([*errors, "...", text[-4000:]])

    def predict(self, request: dict[str, Any]) -> httpx.Response:
        response = httpx.post(f"{self.url}/predict", json=request, timeout=60)
        if response.status_code == 200:
            self.rows_sent += len(request["instances"])
        return response

    def stop(self, timeout: float = 60) -> bool:
        """SIGTERM the whole process group; True if every process exited in time."""
        return bool(process.stop(self.process, timeout=timeout))


def make(
    project: Path, env: dict[str, str], *args: str, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-8000:]
        pytest.fail(f"`{' '.join(map(str, result.args))}` exited {result.returncode}:\n{output}")
    return result


def logged_rows(project: Path, database: str = "predictions.db") -> int:
    with closing(sqlite3.connect(project / database, timeout=30)) as db:
        return int(db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])


def wait_until_logged(project: Path, rows: int, timeout: float = 60) -> None:
    """The log is written off the request path: give the writer a moment to catch up."""
    deadline = time.monotonic() + timeout
    while logged_rows(project) < rows and time.monotonic() < deadline:
        time.sleep(0.5)
    assert logged_rows(project) >= rows


def monitor(
    project: Path, env: dict[str, str], *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    summary = project / "reports" / "drift_summary.json"
    summary.unlink(missing_ok=True)
    result = make(project, env, "monitor", *args)
    if not summary.is_file():
        ok(result)
        pytest.fail("make monitor wrote no reports/drift_summary.json")
    return result, json.loads(summary.read_text())


def importable(python: Path, modules: list[str]) -> set[str]:
    """Which modules that Python can import (found, not imported: that would take seconds)."""
    code = (
        "import importlib.util as u, json, sys; "
        "print(json.dumps([m for m in sys.argv[1:] if u.find_spec(m)]))"
    )
    return set(json.loads(run([str(python), "-c", code, *modules])))


def config(project: Path) -> dict[str, Any]:
    return yaml.safe_load((project / "config.yaml").read_text())


def sample_request(project: Path) -> dict[str, Any]:
    return json.loads((project / "models" / "sample_request.json").read_text())


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A learner's fresh shell: python3 and make on PATH, but no uv."""
    bin_dir = tmp_path_factory.mktemp("bin")
    minor = f"python3.{sys.version_info.minor}"
    python = Path(sys.base_prefix, "bin", minor)
    assert python.exists(), f"no base interpreter at {python}"
    for name in ("python3", minor, "python"):
        (bin_dir / name).symlink_to(python)
    path = [str(bin_dir)] + [
        folder
        for folder in os.environ["PATH"].split(os.pathsep)
        if folder and not Path(folder, "uv").exists()
    ]
    skip = ("ML_", "PYTEST", "VIRTUAL_ENV", "CONFIG_FILE", "MLFLOW_TRACKING_URI")
    return {
        **{key: value for key, value in os.environ.items() if not key.startswith(skip)},
        "PATH": os.pathsep.join(path),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


@pytest.fixture(scope="module")
def project(bake: Callable[..., Path], env: dict[str, str]) -> Path:
    """A fresh default bake, installed with `make install`."""
    project = bake()
    ok(make(project, env, "install", timeout=1800))
    return project


@pytest.fixture(scope="module")
def trained(project: Path, env: dict[str, str]) -> Path:
    ok(make(project, env, "train", timeout=1800))
    return project


@pytest.fixture(scope="module")
def server(
    trained: Path, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    server = Server(trained, env, log)
    try:
        server.start(["make", "serve", "HOST=127.0.0.1", f"PORT={server.port}"])
        yield server
    finally:
        server.stop()


def test_make_install_needs_only_python3_and_make(project: Path, env: dict[str, str]) -> None:
    assert shutil.which("uv", path=env["PATH"]) is None
    package = project.name.replace("-", "_")
    modules = [
        package,
        "fastapi",
        "onnxruntime",
        "sklearn",
        "skl2onnx",
        "mlflow",
        "evidently",
        "pytest",
    ]
    assert importable(project / ".venv" / "bin" / "python", modules) == set(modules)


def test_make_train_tracks_runs_and_registers_a_champion(trained: Path) -> None:
    with closing(sqlite3.connect(trained / "mlflow.db")) as db:
        runs = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        champions = db.execute(
            "SELECT name, version FROM registered_model_aliases WHERE alias = 'champion'"
        ).fetchall()
    assert runs >= 2, "expected a baseline and a tuned run"
    assert len(champions) == 1
    assert champions[0][0] == config(trained)["model"]["registered_name"]


def test_make_train_exports_a_self_contained_bundle(trained: Path) -> None:
    models = trained / "models"
    files = ("model.skops", "model.onnx", "metadata.json", "sample_request.json", "model_card.md")
    for name in files:
        assert (models / name).is_file(), f"models/{name} missing"
    metadata = json.loads((models / "metadata.json").read_text())
    with closing(sqlite3.connect(trained / "mlflow.db")) as db:
        (champion,) = db.execute(
            "SELECT version FROM registered_model_aliases WHERE alias = 'champion'"
        ).fetchone()
    assert metadata["version"] == str(champion)
    for name in ("model.skops", "model.onnx"):  # each model file, checked when it is loaded
        digest = hashlib.sha256((models / name).read_bytes()).hexdigest()
        assert metadata["files"][name] == digest, name
    assert metadata["onnx_parity"]["max_abs_diff"] <= metadata["onnx_parity"]["tolerance"]
    assert len(sample_request(trained)["instances"]) == 5


def test_service_describes_itself(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/metadata").json()["version"]
    assert httpx.get(f"{server.url}/metrics").status_code == 200


def test_service_answers_predict_with_the_champion(server: Server, trained: Path) -> None:
    request = sample_request(trained)
    response = server.predict(request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["predictions"]) == len(request["instances"])
    assert len(body["probabilities"]) == len(request["instances"])  # the default is a classifier
    metadata = json.loads((trained / "models" / "metadata.json").read_text())
    assert body["model_version"] == metadata["version"]


def test_monitor_finds_no_drift_in_normal_traffic(
    server: Server, trained: Path, env: dict[str, str]
) -> None:
    rows = 300
    ok(make(trained, env, "simulate", "HOST=127.0.0.1", f"PORT={server.port}", f"ROWS={rows}"))
    server.rows_sent += rows
    wait_until_logged(trained, server.rows_sent)
    result, summary = monitor(trained, env, "FAIL_ON_DRIFT=1")
    assert summary["drift_detected"] is False, summary
    assert result.returncode == 0, result.stdout + result.stderr
    assert (trained / "reports" / "drift_report.html").is_file()
    # make simulate sent the true values of about half of the rows to /feedback, later
    quality = json.loads((trained / "reports" / "quality_summary.json").read_text())
    metadata = json.loads((trained / "models" / "metadata.json").read_text())
    assert quality["status"] == "ok", quality
    served = quality["versions"][metadata["version"]]
    assert rows * 0.35 < served["labelled_rows"] < rows * 0.65, served
    assert served["holdout"] == metadata["metrics"]
    assert set(served["live"]) >= {"accuracy", "f1_macro"} or set(served["live"]) >= {"rmse"}
    assert (trained / "reports" / "quality_report.html").is_file()


def test_monitor_detects_drifted_traffic(
    server: Server, trained: Path, env: dict[str, str]
) -> None:
    rows = config(trained)["monitoring"]["window"]  # fill the whole window with drifted rows
    simulate = ["simulate", "HOST=127.0.0.1", f"PORT={server.port}", f"ROWS={rows}", "DRIFT=1"]
    ok(make(trained, env, *simulate))
    server.rows_sent += rows
    wait_until_logged(trained, server.rows_sent)
    result, summary = monitor(trained, env)
    assert summary["drift_detected"] is True, summary
    assert result.returncode == 0, "without FAIL_ON_DRIFT, drift is reported, not a failure"
    result, _ = monitor(trained, env, "FAIL_ON_DRIFT=1")
    assert result.returncode != 0, "FAIL_ON_DRIFT=1 must fail the build when drift is detected"


def test_make_docs_builds_the_site_with_the_notebooks_run(
    trained: Path, env: dict[str, str]
) -> None:
    """After training and monitoring, as CI's docs job runs it: strict (a broken link fails),
    offline, both notebooks executed, the reports and the API reference in the site."""
    ok(make(trained, env, "docs", timeout=900))
    site = trained / "site"
    for page in ("index.html", "generated/api/index.html", "generated/model_card/index.html"):
        assert (site / page).is_file(), f"site/{page} was not built"
    for notebook in ("01-explore", "02-error-analysis"):
        markdown = (trained / "docs" / "generated" / "notebooks" / f"{notebook}.md").read_text()
        assert "```" in markdown and "Traceback" not in markdown, notebook
    assert (site / "generated" / "drift_report.html").is_file()
    assert "| `mean radius` |" in (trained / "docs" / "generated" / "api.md").read_text()
    assert not list((trained / "notebooks").glob("*.md")), "outputs belong to docs/generated/"


def test_sigterm_loses_no_logged_prediction(server: Server, trained: Path) -> None:
    assert server.predict(sample_request(trained)).status_code == 200  # right before shutdown
    assert server.stop(), f"the server did not stop within 60 s of SIGTERM:\n{server.output()}"
    assert logged_rows(trained) == server.rows_sent


def dockerfile(project: Path) -> str:
    """The baked Dockerfile, its continued lines joined."""
    return (project / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")


def dockerfile_cmd(project: Path) -> list[str]:
    """The image's start command, exactly as the baked Dockerfile says (exec form)."""
    lines = dockerfile(project).splitlines()
    (cmd,) = [line.removeprefix("CMD ") for line in lines if line.startswith("CMD ")]
    command = json.loads(cmd)
    assert isinstance(command, list), f"CMD is not in exec form: {cmd}"
    return [str(part) for part in command]


def smoke(project: Path, env: dict[str, str], url: str, *args: str) -> tuple[int, list[str]]:
    """`make smoke URL=...`: its exit code and the error lines it logged."""
    result = make(project, env, "smoke", f"URL={url}", *args, timeout=300)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if " ERROR " in line]
    return result.returncode, errors


@pytest.fixture(scope="module")
def image_venv(bake: Callable[..., Path]) -> Iterator[Path]:
    """What the Docker image installs into /opt/venv: the locked serve packages, hashes
    required, then the package alone, not editable. In a folder every user can read, from a
    Python every user can run when this machine can run other users (the platform tests)."""
    source = bake()
    platforms = load_platforms(source)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    shared = None
    if platforms.unavailable() is None:
        shared = platforms.python_for(platforms.ARBITRARY_UID, version)
    base = str(shared or sys.executable)
    venv, uv = platforms.shared_directory("image-venv-"), tool("uv")
    try:
        run([uv, "venv", "--quiet", "--allow-existing", "--python", base, str(venv)])
        python = str(venv / "bin" / "python")
        install = ["pip", "install", "--quiet", "--compile-bytecode", "--python", python]
        run([uv, *install, "--require-hashes", "-r", str(source / "requirements" / "serve.txt")])
        run([uv, *install, "--no-deps", str(source)])
        yield venv
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def test_serve_extra_alone_serves_the_bundle_with_the_images_command(
    bake: Callable[..., Path], trained: Path, env: dict[str, str], image_venv: Path, tmp_path: Path
) -> None:
    source = bake()
    python = image_venv / "bin" / "python"
    # The Dockerfile imports what the server imports, to write their bytecode: that must work.
    warm_up = re.search(r'python -c "(import [^"]+)"', dockerfile(source))
    assert warm_up, "the Dockerfile writes no bytecode for the server's imports"
    run([str(python), "-c", warm_up[1]])
    heavy = ["mlflow", "evidently", "matplotlib", "sklearn", "scipy", "pandas", "skops", "onnx"]
    assert not importable(python, heavy)
    assert importable(python, ["onnxruntime"]) == {"onnxruntime"}
    # Only what the image copies: the config and the exported bundle.
    app = tmp_path / "app"
    shutil.copytree(trained / "models", app / "models")
    shutil.copy(trained / "config.yaml", app / "config.yaml")
    # The image's CMD with the venv first on PATH, as in the image; PORT as a platform sets it.
    path = os.pathsep.join([str(python.parent), env["PATH"]])
    server = Server(app, {**env, "PATH": path}, tmp_path / "serve.log")
    server.env["PORT"] = str(server.port)
    try:
        server.start(dockerfile_cmd(source))
        request = sample_request(trained)
        response = server.predict(request)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert len(answer["predictions"]) == len(request["instances"])
        # /docs loads Swagger UI from the service: the serve extra ships its files.
        assets = httpx.get(f"{server.url}/docs-assets/swagger-ui-bundle.js", timeout=30)
        assert assets.status_code == 200
        # `make smoke` from the learner's project, against the running service.
        code, errors = smoke(trained, env, server.url, "REQUESTS=5")
        assert (code, errors) == (0, []), server.output()
    finally:
        stopped = server.stop()
    assert stopped, f"the server did not stop within 60 s of SIGTERM:\n{server.output()}"

    # A stopped service: one line naming the check, after the (short) wait.
    code, errors = smoke(trained, env, server.url, "WAIT=1")
    assert code != 0
    assert len(errors) == 1 and "/ready: no answer" in errors[0], errors

    # A service whose /predict refuses the sample (batches of one): one line naming /predict.
    broken = Server(app, {**server.env, "ML_SERVING__MAX_BATCH_SIZE": "1"}, tmp_path / "b.log")
    broken.env["PORT"] = str(broken.port)
    try:
        broken.start(dockerfile_cmd(source))
        code, errors = smoke(trained, env, broken.url, "WAIT=30")
    finally:
        broken.stop()
    assert code != 0
    assert len(errors) == 1 and "/predict: answered 413" in errors[0], errors

    # The same rows through the scikit-learn pipeline, in the project's full environment.
    package = source.name.replace("-", "_")
    predictions, probabilities = sklearn_answer(trained, package, request["instances"])
    assert answer["predictions"] == predictions
    for mine, theirs in zip(answer["probabilities"], probabilities, strict=True):
        assert mine == pytest.approx(theirs, abs=1e-4)


def sklearn_answer(project: Path, package: str, rows: list[dict[str, Any]]) -> list[Any]:
    """What serving.runtime sklearn answers for `rows`, from the project's own .venv."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        f"from {package}.bundle import load_bundle\n"
        f"from {package}.runtimes import load_runtime\n"
        "runtime = load_runtime('sklearn', load_bundle(Path('models')))\n"
        "print(json.dumps(runtime.score(json.loads(sys.stdin.read()))))\n"
    )
    python = str(project / ".venv" / "bin" / "python")
    answer: list[Any] = json.loads(run([python, "-c", code], cwd=project, input=json.dumps(rows)))
    return answer


# The Kubernetes manifests ship with every image (deploy=none included); the others are the
# deploy target's own platform.
PLATFORM_OF = {"none": "kubernetes"}


@pytest.fixture(params=AXES["deploy"])
def target(request: pytest.FixtureRequest, bake: Callable[..., Path]) -> tuple[str, Path]:
    """A deploy target's platform and a bake with its files."""
    deploy = str(request.param)
    return PLATFORM_OF.get(deploy, deploy), bake(deploy=deploy)


def test_each_deploy_target_runs_the_image_as_its_platform_does(
    target: tuple[str, Path],
    trained: Path,
    env: dict[str, str],
    image_venv: Path,
    tmp_path: Path,
) -> None:
    """The image's locked environment, ENV, WORKDIR and CMD, run as the target's platform runs
    it (the bake's tests/platforms.py: its uid, read-only files, writable paths, $PORT and
    memory limit): /ready answers 200, the HEALTHCHECK passes, `make smoke` passes and every
    answered row is in the prediction log, written by that uid."""
    name, project = target
    platforms = load_platforms(project)
    if reason := platforms.unavailable():
        pytest.skip(reason)
    platform = platforms.deploy_targets(project)[name]
    metadata = (trained / "models" / "metadata.json").read_bytes()
    server = Server(trained, env, tmp_path / "serve.log")
    with platforms.container(
        platform,
        dockerfile=project / "Dockerfile",
        context=trained,
        mounts={"/opt/venv": image_venv},
        build_args={"MODEL_SHA256": hashlib.sha256(metadata).hexdigest()},  # as docker-build
        port=server.port,
    ) as launch:
        server.cwd, server.env = launch.cwd, launch.env
        try:
            server.start(launch.command, timeout=30)
            healthcheck = subprocess.run(
                launch.healthcheck, cwd=launch.cwd, env=launch.env, capture_output=True, check=False
            )
            code, errors = smoke(trained, env, server.url, "REQUESTS=5")
        finally:
            stopped = server.stop()
        assert stopped, f"the server did not stop within 60 s of SIGTERM:\n{server.output()}"
        assert healthcheck.returncode == 0, healthcheck.stderr
        assert (code, errors) == (0, []), server.output()
        (database,) = launch.root.rglob("predictions.db")
        rows = 5 * len(sample_request(trained)["instances"])
        assert logged_rows(database.parent, database.name) == rows
        assert database.stat().st_uid == launch.uid
