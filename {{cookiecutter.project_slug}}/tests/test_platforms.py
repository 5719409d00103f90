"""The image on each deploy target of this project, run as that platform runs it (platforms.py):
its user, read-only files, $PORT and memory limit. /ready must answer 200, the HEALTHCHECK
pass, the smoke check (`make smoke`) pass, and every answered row reach the prediction log.

Here this project's environment stands in for the image's /opt/venv (the template's own tests
run the same emulation on the image's locked packages). It runs another user's process, so it
needs root; elsewhere these tests are skipped with the reason.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest
import yaml

import platforms
from {{ cookiecutter.package_name }}.bundle import METADATA_FILE, sha256
from {{ cookiecutter.package_name }}.serving import process
from {{ cookiecutter.package_name }}.smoke import SmokeError, smoke

ROOT = Path(__file__).resolve().parents[1]
TARGETS = platforms.deploy_targets(ROOT)
CLOUD_RUN = ROOT / "deploy" / "cloudrun" / "service.yaml"
REQUESTS = 5
IMPORT = "import {{ cookiecutter.package_name }}.serving.app"  # what the server imports


@pytest.fixture(scope="module")
def image_venv() -> Iterator[Path]:
    """The image's /opt/venv: a virtualenv every user can run, holding this package as the
    image installs it (a copy, not editable) and reading the rest from this environment."""
    if reason := platforms.unavailable():
        pytest.skip(reason)
    uid = platforms.ARBITRARY_UID
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    python = platforms.python_for(uid, version, also=Path(sys._base_executable))
    if python is None:
        pytest.skip(f"no Python {version} that uid {uid} can run")
    venv = platforms.shared_directory("image-venv-")
    try:
        subprocess.run([str(python), "-m", "venv", "--without-pip", str(venv)], check=True)
        site = venv / "lib" / f"python{version}" / "site-packages"
        packages = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
        (site / "environment.pth").write_text("\n".join(sorted(packages)) + "\n")
        package = Path(process.__file__).parents[1]  # src/<package>
        shutil.copytree(package, site / package.name, ignore=shutil.ignore_patterns("__pycache__"))
        probe = subprocess.run(
            [*platforms.as_user_command(uid, uid), str(venv / "bin/python"), "-c", IMPORT],
            cwd="/",
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode != 0:
            last = (probe.stderr.strip().splitlines() or ["?"])[-1]
            pytest.skip(f"uid {uid} cannot import this environment's packages: {last}")
        yield venv
    finally:
        shutil.rmtree(venv, ignore_errors=True)


@pytest.fixture
def context(tmp_path: Path, bundle_dir: Path) -> Path:
    """The build context the image is made from: config.yaml and the exported models/."""
    context = tmp_path / "context"
    shutil.copytree(bundle_dir, context / "models")
    shutil.copy(ROOT / "config.yaml", context / "config.yaml")
    return context


@pytest.fixture
def sample(tmp_path: Path, frame: pd.DataFrame) -> Path:
    rows = json.loads(frame.drop(columns="target").head(3).to_json(orient="records"))
    path = tmp_path / "sample_request.json"
    path.write_text(json.dumps({"instances": rows}))
    return path


def excerpt(log: Path) -> str:
    """The service's errors first (a /ready that keeps answering 503 pushes them out of the
    end of its log), then the end."""
    text = log.read_text(errors="replace")
    errors = [line for line in text.splitlines() if " ERROR " in line][:10]
    return "\n".join([*errors, "...", text[-3000:]])


def logged_rows(root: Path) -> int:
    (database,) = root.rglob("predictions.db")
    with closing(sqlite3.connect(database)) as db:
        return int(db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_image_serves_as_the_platform_runs_it(
    target: str, image_venv: Path, context: Path, sample: Path, tmp_path: Path
) -> None:
    platform = TARGETS[target]
    build_args = {"MODEL_SHA256": sha256(context / "models" / METADATA_FILE)}
    port = process.free_port()
    with platforms.container(
        platform,
        dockerfile=ROOT / "Dockerfile",
        context=context,
        mounts={"/opt/venv": image_venv},
        build_args=build_args,
        port=port,
    ) as launch:
        log = tmp_path / "serve.log"
        service = process.start(launch.command, cwd=launch.cwd, env=launch.env, log_file=log)
        url = f"http://127.0.0.1:{port}"
        try:
            process.wait_until_ready(service, f"{url}/ready", timeout=30)
            health = subprocess.run(
                launch.healthcheck, cwd=launch.cwd, env=launch.env, capture_output=True, check=False
            )
            report = smoke(url, sample, requests=REQUESTS, wait=10)
        except (process.ServiceProcessError, SmokeError) as exc:
            pytest.fail(f"{target}: {exc}\n{excerpt(log)}")
        finally:
            stopped = process.stop(service)
        assert stopped, excerpt(log)
        assert health.returncode == 0, health.stderr
        assert logged_rows(launch.root) == REQUESTS * report.predictions
        (database,) = launch.root.rglob("predictions.db")
        assert database.stat().st_uid == launch.uid, "the log was written by another user"


@pytest.mark.skipif(not CLOUD_RUN.is_file(), reason="this project has no Cloud Run service")
def test_cloud_run_limits_follow_config_yaml() -> None:
    """Cloud Run starts another instance before the worker would answer 503 and waits a little
    longer than the service's own timeout: after changing serving.max_concurrency or
    serving.request_timeout in config.yaml, change deploy/cloudrun/service.yaml too."""
    serving = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))["serving"]
    service = yaml.safe_load(CLOUD_RUN.read_text(encoding="utf-8"))
    spec = service["spec"]["template"]["spec"]
    workers = int(platforms.deploy_targets(ROOT)["cloudrun"].env["WORKERS"])
    assert spec["containerConcurrency"] == serving["max_concurrency"] * workers
    assert serving["request_timeout"] < spec["timeoutSeconds"] <= serving["request_timeout"] + 10


def test_a_dockerfile_the_emulation_cannot_reproduce_is_refused(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text('FROM python:3-slim\nVOLUME /data\nCMD ["python"]\n')
    with pytest.raises(platforms.EmulationError, match="cannot emulate VOLUME /data"):
        platforms.read_image([dockerfile], {})
