"""End to end against real servers: PostgreSQL, an `mlflow server` process on it, the service.

A team's setup rather than a laptop's: `make train` tracks to an MLflow tracking server whose
backend store is PostgreSQL (artifacts proxied by the server), the service runs two workers
that log every prediction to PostgreSQL, and `make monitor` reads that same log. One bake, and
the shared virtualenv of the generated projects (no `make install`: test_end_to_end covers it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import TEMPLATE, load_service_process
from pgserver import PostgresServer, postgres_server
from test_end_to_end import Server, make, ok, sample_request

pytestmark = pytest.mark.e2e

process = load_service_process()
SIMULATED_ROWS = 200  # fewer than monitoring.window: the report must compare every logged row


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server("predictions") as server:
        server.create_database("mlflow")
        yield server


@pytest.fixture(scope="module")
def project(bake: Callable[..., Path]) -> Path:
    return bake()


@pytest.fixture(scope="module")
def env(project: Path, postgres: PostgresServer) -> dict[str, str]:
    """A learner's shell pointed at the team's servers through the environment only."""
    skip = ("ML_", "PYTEST", "VIRTUAL_ENV", "CONFIG_FILE", "MLFLOW_")
    return {
        **{key: value for key, value in os.environ.items() if not key.startswith(skip)},
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONPATH": str(project / "src"),  # the shared venv holds the dependencies only
        "ML_PREDICTION_LOG__URL": postgres.url("predictions"),
        "ML_MODEL__N_ITER": "2",  # tracking is under test here, not the search
        "ML_MODEL__CV": "2",
    }


@pytest.fixture(scope="module")
def venv(generated_python: Path) -> str:
    return f"VENV={generated_python.parent.parent}"


class MlflowServer:
    """`mlflow server` on the `mlflow` database; artifacts go through it to a local folder."""

    def __init__(self, mlflow: Path, backend: str, root: Path, env: dict[str, str]) -> None:
        self.artifacts, self.log, port = (
            root / "artifacts",
            root / "server.log",
            process.free_port(),
        )
        self.url = f"http://127.0.0.1:{port}"
        command = [
            str(mlflow), "server", "--backend-store-uri", backend,
            "--artifacts-destination", str(self.artifacts),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ]  # fmt: skip
        # No GenAI job runner: one process less competing for the CPU while it starts.
        env = {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.process = process.start(command, cwd=root, env=env, log_file=self.log)

    def wait_until_ready(self) -> None:
        try:
            process.wait_until_ready(self.process, f"{self.url}/health", timeout=180)
        except process.ServiceProcessError as exc:
            pytest.fail(f"mlflow server: {exc}\n{self.log.read_text(errors='replace')[-6000:]}")


@pytest.fixture(scope="module")
def mlflow_server(
    generated_python: Path,
    postgres: PostgresServer,
    env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MlflowServer]:
    """Started, not yet ready: it boots (~20 s) while the project prepares its data."""
    mlflow = generated_python.with_name("mlflow")
    server = MlflowServer(mlflow, postgres.url("mlflow"), tmp_path_factory.mktemp("mlflow"), env)
    try:
        yield server
    finally:
        process.stop(server.process, timeout=10)


@pytest.fixture(scope="module")
def trained(project: Path, env: dict[str, str], venv: str, mlflow_server: MlflowServer) -> Path:
    ok(make(project, env, "data", venv))
    mlflow_server.wait_until_ready()
    ok(make(project, {**env, "MLFLOW_TRACKING_URI": mlflow_server.url}, "train", venv))
    return project


def mlflow_api(url: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    response = httpx.request(method, f"{url}/api/2.0/mlflow/{path}", timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_make_train_tracks_to_the_mlflow_server(trained: Path, mlflow_server: MlflowServer) -> None:
    url, artifacts = mlflow_server.url, mlflow_server.artifacts
    name = trained.name.replace("-", "_")  # model.registered_name: the package name
    by_name = {"experiment_name": trained.name}  # mlflow.experiment: the project's slug
    experiment = mlflow_api(url, "GET", "experiments/get-by-name", params=by_name)["experiment"]
    search = {"experiment_ids": [experiment["experiment_id"]]}
    runs = mlflow_api(url, "POST", "runs/search", json=search)["runs"]
    assert sorted(run["info"]["run_name"] for run in runs) == ["baseline", "tuned"]
    alias = {"name": name, "alias": "champion"}
    champion = mlflow_api(url, "GET", "registered-models/alias", params=alias)["model_version"]
    assert champion["run_id"] in {run["info"]["run_id"] for run in runs}
    metadata = json.loads((trained / "models" / "metadata.json").read_text())
    assert metadata["version"] == champion["version"]
    # Nothing tracked beside the project; the run's files reached the server's artifact folder.
    assert not (trained / "mlflow.db").exists()
    assert not (trained / "mlruns").exists()
    assert any(path.is_file() for path in artifacts.rglob("*"))


def test_two_workers_log_to_postgres_and_monitor_reads_every_row(
    trained: Path,
    env: dict[str, str],
    venv: str,
    postgres: PostgresServer,
    tmp_path: Path,
) -> None:
    server = Server(trained, env, tmp_path / "serve.log")
    try:
        server.start(["make", "serve", venv, f"PORT={server.port}", "WORKERS=2"])
        rows = sample_request(trained)["instances"] * 4
        with ThreadPoolExecutor(max_workers=4) as pool:  # a connection each: both workers answer
            answers = list(pool.map(lambda row: answer(server.url, row), rows))
        assert answers == [200] * len(rows), server.output()
        simulate = ["simulate", venv, f"PORT={server.port}", f"ROWS={SIMULATED_ROWS}"]
        ok(make(trained, env, *simulate))
    finally:
        stopped = server.stop()
    assert stopped, f"the service did not stop within 60 s of SIGTERM:\n{server.output()}"
    sent = len(rows) + SIMULATED_ROWS
    assert postgres.sql("predictions", "SELECT count(*) FROM predictions") == str(sent)

    result = ok(make(trained, env, "monitor", venv))
    summary = json.loads((trained / "reports" / "drift_summary.json").read_text())
    assert summary["rows_compared"] == sent
    # make simulate sent the true values of about half of its rows to /feedback: PostgreSQL
    # holds them, and make monitor joined them with their predictions there.
    labelled = int(postgres.sql("predictions", "SELECT count(*) FROM feedback"))
    assert SIMULATED_ROWS * 0.35 < labelled < SIMULATED_ROWS * 0.65
    quality = json.loads((trained / "reports" / "quality_summary.json").read_text())
    assert quality["status"] == "ok", quality
    assert quality["labelled_rows"] == labelled
    for output in (server.output(), result.stdout + result.stderr):
        assert postgres.password not in output


def answer(url: str, row: dict[str, Any]) -> int:
    return httpx.post(f"{url}/predict", json={"instances": [row]}, timeout=60).status_code


def test_no_answered_prediction_is_lost_under_faults(
    trained: Path, generated_python: Path, tmp_path: Path
) -> None:
    """`make faults --quick` on this project: each fault of the table (PostgreSQL stopped,
    frozen during SIGTERM, down at start; SQLite read-only, disk full, deleted; a worker
    SIGKILLed) under load, then every request answered 200 is in the log exactly once."""
    command = [
        sys.executable, str(TEMPLATE / "benchmarks" / "faults.py"), "--quick",
        "--project", str(trained), "--venv", str(generated_python.parent.parent),
        "--work", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| ")]
    table = [cells for cells in lines[2:] if "skipped" not in cells[1]]
    assert len(table) >= 5, done.stdout  # only the two tmpfs/chattr lines need root
    for fault, answered, logged, lost, *_ in table:
        assert int(answered) > 100, fault
        assert (int(logged), int(lost)) == (int(answered), 0), fault
