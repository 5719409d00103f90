"""The smoke check against a real HTTP server on a free port that answers like the service."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import StubServer, serving
from {{ cookiecutter.package_name }} import smoke as smoke_module
from {{ cookiecutter.package_name }}.cli import app
from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.prediction_log.reader import Reader
from {{ cookiecutter.package_name }}.serving import process
from {{ cookiecutter.package_name }}.smoke import SmokeError, smoke

PACKAGE = smoke_module.__name__.rpartition(".")[0]
SRC = Path(smoke_module.__file__).resolve().parents[1]
SAMPLE = {"instances": [{"age": 50.0, "plan": "pro"}, {"age": 61.5, "plan": "basic"}]}


def predict(body: Any) -> tuple[int, Any]:
    predictions = [0] * len(body["instances"])
    return 200, {"predictions": predictions, "model_version": "3", "request_id": "r"}


class Service(StubServer):
    """The service's routes; a test replaces a route to break it."""

    def __init__(self) -> None:
        super().__init__(
            {
                "/health": lambda _: (200, {"status": "ok"}),
                "/ready": self.ready,
                "/metadata": lambda _: (200, {"name": "test-model", "version": "3"}),
                "/predict": predict,
            }
        )
        self.asleep_for = 0  # the first N calls of /ready answer 503, like a waking instance

    @property
    def authorizations(self) -> list[str | None]:
        """The Authorization header of each POST."""
        return [h.get("Authorization") for _, body, h in self.received if body is not None]

    def ready(self, _: Any) -> tuple[int, Any]:
        if self.calls["/ready"] <= self.asleep_for:
            return 503, {"detail": "waking up"}
        return 200, {"status": "ready", "model_version": "3"}


@pytest.fixture
def service() -> Iterator[Service]:
    with serving(Service()) as server:
        yield server


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample_request.json"
    path.write_text(json.dumps(SAMPLE))
    return path


@pytest.fixture(autouse=True)
def _fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smoke_module, "POLL_SECONDS", 0.05)


def test_passes_against_a_healthy_service(service: Service, sample: Path) -> None:
    report = smoke(service.url, sample, requests=5, wait=5)
    assert report.model_version == "3"
    assert report.predictions == len(SAMPLE["instances"])
    assert 0 < report.p50_ms <= report.p95_ms
    assert service.calls["/predict"] == 5
    assert service.calls["/health"] == service.calls["/metadata"] == 1


def test_waits_for_a_sleeping_instance_to_wake_with_a_progress_line(
    service: Service,
    sample: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(smoke_module, "PROGRESS_SECONDS", 0.0)
    caplog.set_level(logging.INFO)
    service.asleep_for = 3
    report = smoke(service.url + "/", sample, requests=1, wait=10)
    assert service.calls["/ready"] == 4
    assert report.waited_seconds > 0
    assert f"Waiting for {service.url}/ready: answered 503" in caplog.text


def test_an_answer_that_is_not_json_is_named(service: Service, sample: Path) -> None:
    service.routes["/health"] = lambda _: (200, "ok")
    with pytest.raises(SmokeError, match=r"^/health: the answer is not a JSON object: 'ok'"):
        smoke(service.url, sample, wait=5)


def test_a_stopped_service_fails_on_ready_after_the_wait(sample: Path) -> None:
    stopped = Service()
    stopped.server_close()  # the port was free a moment ago and nothing listens on it now
    with pytest.raises(SmokeError, match=r"^/ready: no answer \(.*\) after waiting 1 s"):
        smoke(stopped.url, sample, wait=1)


def test_a_service_that_never_gets_ready_fails_on_ready(service: Service, sample: Path) -> None:
    service.asleep_for = 10**6
    with pytest.raises(SmokeError, match=r"^/ready: answered 503 after waiting 0 s"):
        smoke(service.url, sample, wait=0.2)


def test_a_broken_predict_is_named(service: Service, sample: Path) -> None:
    service.routes["/predict"] = lambda _: (500, {"detail": "Internal Server Error"})
    with pytest.raises(SmokeError, match=r"^/predict: answered 500, expected 200"):
        smoke(service.url, sample, wait=5)


def test_too_few_predictions_is_named(service: Service, sample: Path) -> None:
    service.routes["/predict"] = lambda _: (200, {"predictions": [1], "model_version": "3"})
    with pytest.raises(SmokeError, match=r"^/predict: expected 2 predictions, got \[1\]"):
        smoke(service.url, sample, wait=5)


def test_a_failure_during_the_latency_run_names_the_request(service: Service, sample: Path) -> None:
    def fail_from_the_third(body: Any) -> tuple[int, Any]:
        return (503, {"detail": "busy"}) if service.calls["/predict"] >= 3 else predict(body)

    service.routes["/predict"] = fail_from_the_third
    with pytest.raises(SmokeError, match=r"^/predict \(request 3\): answered 503"):
        smoke(service.url, sample, requests=5, wait=5)


def test_an_answer_without_a_model_version_fails(service: Service, sample: Path) -> None:
    service.routes["/ready"] = lambda _: (200, {"status": "ready"})
    with pytest.raises(SmokeError, match=r"^/ready: the answer has no model_version"):
        smoke(service.url, sample, wait=5)


@pytest.mark.parametrize(
    ("url", "message"),
    [("127.0.0.1:8000", "must start with http:// or https://"), ("file:///etc", "must start")],
)
def test_a_url_that_is_not_http_is_refused(sample: Path, url: str, message: str) -> None:
    with pytest.raises(SmokeError, match=message):
        smoke(url, sample)


def test_without_a_sample_request_it_says_to_train(service: Service, tmp_path: Path) -> None:
    with pytest.raises(SmokeError, match="run `make train`"):
        smoke(service.url, tmp_path / "missing.json")


def test_cli_reads_the_sample_next_to_the_model_and_fails_in_one_line(
    settings: Settings, service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    settings.bundle_dir.mkdir(parents=True)
    (settings.bundle_dir / "sample_request.json").write_text(json.dumps(SAMPLE))
    caplog.set_level(logging.INFO)
    runner = CliRunner()
    passed = runner.invoke(app, ["smoke", "--url", service.url, "--requests", "3"])
    assert passed.exit_code == 0, passed.output
    assert "Smoke check passed." in caplog.text

    caplog.clear()
    service.routes["/metadata"] = lambda _: (404, {"detail": "Not Found"})
    failed = runner.invoke(app, ["smoke", "--url", service.url, "--wait", "1"])
    assert failed.exit_code == 1
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == ["/metadata: answered 404, expected 200 ({'detail': 'Not Found'})"]


def test_sends_the_api_key_to_predict(service: Service, sample: Path) -> None:
    smoke(service.url, sample, requests=2, wait=5, api_key="k3y")

    assert service.authorizations == ["Bearer k3y", "Bearer k3y"]


def test_every_request_says_it_is_smoke_traffic(service: Service, sample: Path) -> None:
    smoke(service.url, sample, requests=2, wait=5)

    assert {headers.get("X-Traffic") for _, _, headers in service.received} == {"smoke"}


def test_two_smoke_runs_leave_the_live_traffic_unchanged(
    settings: Settings, bundle_dir: Path, frame: pd.DataFrame, tmp_path: Path
) -> None:
    """Against a real service: smoke requests are answered and logged, but the live traffic that
    drift, quality and compare read stays what clients sent."""
    instances = json.loads(frame.drop(columns="target").head(8).to_json(orient="records"))
    sample = tmp_path / "sample_request.json"
    sample.write_text(json.dumps({"instances": instances[:2]}))
    log = Reader(settings.prediction_log.url)
    port = process.free_port()
    skip = ("ML_", "CONFIG_FILE", "PROMETHEUS_MULTIPROC_DIR")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    command = [sys.executable, "-m", PACKAGE, "serve", "--port", str(port)]
    server = process.start(command, cwd=tmp_path, env={**env, "PYTHONPATH": str(SRC)})
    try:
        url = f"http://127.0.0.1:{port}"
        process.wait_until_ready(server, f"{url}/ready", timeout=90)
        httpx.post(f"{url}/predict", json={"instances": instances}, timeout=30).raise_for_status()
        wait_for_rows(log, 8)
        live = log.latest(1000)
        for _ in range(2):
            smoke(url, sample, requests=3, wait=30)
        wait_for_rows(log, 8 + 2 * 3 * 2)
        after = log.latest(1000)
    finally:
        process.stop(server)

    pd.testing.assert_frame_equal(after, live)


def wait_for_rows(log: Reader, rows: int) -> None:
    """The service writes its log a moment after the answer."""
    deadline = time.monotonic() + 30
    while log.count() < rows:
        assert time.monotonic() < deadline, f"{log.count()} rows logged, not {rows}"
        time.sleep(0.05)
