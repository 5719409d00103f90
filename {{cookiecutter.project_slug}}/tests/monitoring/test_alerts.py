"""Alerts received by a real local HTTP server standing in for a chat webhook."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from conftest import TASK, StubServer, Traffic, serving
from {{ cookiecutter.package_name }}.bundle import METADATA_FILE
from {{ cookiecutter.package_name }}.cli import app
from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.monitoring.alerts import mask, notify, send
from {{ cookiecutter.package_name }}.monitoring.drift import ColumnDrift, DriftSummary
from {{ cookiecutter.package_name }}.monitoring.quality import QualitySummary, VersionQuality
from {{ cookiecutter.package_name }}.pipeline.data import prepare

HOOK = "/services/T000/B000/secret-token"
CI_VARIABLES = ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID", "CI_JOB_URL")


@pytest.fixture
def webhook() -> Iterator[StubServer]:
    with serving(StubServer({HOOK: lambda _: (200, "ok")})) as server:
        yield server


@pytest.fixture(autouse=True)
def _outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CI_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def drift(detected: bool) -> DriftSummary:
    columns = {"age": ColumnDrift(0.001, detected, "K-S p_value", 0.05)}
    return DriftSummary(
        detected, 1.0 if detected else 0.0, 0.5, ("age",) if detected else (), columns,
        120, 400, 500, "", "", ("1",), "", Path("reports/drift_report.html"),
    )  # fmt: skip


def quality(degraded: bool) -> QualitySummary:
    version = VersionQuality(40, {"f1_macro": 0.6}, {"f1_macro": 0.9}, 1 / 3, degraded)
    return QualitySummary(
        "ok", "", "classification", "f1_macro", 40, 30, 0.1, {"7": version}, "", None
    )


def with_webhook(settings: Settings, url: str) -> Settings:
    monitoring = settings.monitoring.model_copy(update={"alert_webhook_url": SecretStr(url)})
    return settings.model_copy(update={"monitoring": monitoring})


def test_drift_and_degradation_post_one_chat_message(
    settings: Settings, webhook: StubServer
) -> None:
    found = notify(with_webhook(settings, webhook.url + HOOK), drift(True), quality(True))

    ((body, headers),) = [(b, h) for _, b, h in webhook.received]
    assert headers["Content-Type"] == "application/json"
    assert body["text"] == body["content"]  # Slack and Teams read text, Discord content
    assert body["text"].startswith("[test-model] Data drift: 1 of 1 features drifted (age)")
    assert (
        "Model version 7: live f1_macro 0.6000 vs 0.9000 on the holdout set (33% worse"
        in (body["text"])
    )
    assert body["text"].endswith(f"See {settings.monitoring.reports_dir}")
    assert len(found) == 2


def test_in_ci_the_message_links_the_run(
    settings: Settings, webhook: StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "me/project")
    monkeypatch.setenv("GITHUB_RUN_ID", "42")

    notify(with_webhook(settings, webhook.url + HOOK), drift(True), quality(False))

    assert webhook.bodies(HOOK)[0]["text"].endswith(
        "See https://github.com/me/project/actions/runs/42"
    )


def test_an_empty_url_is_no_webhook(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """CI passes a secret that is not set as an empty string."""
    caplog.set_level(logging.INFO)
    assert notify(with_webhook(settings, ""), drift(True), quality(False))
    assert "No alert sent: set ML_MONITORING__ALERT_WEBHOOK_URL" in caplog.text
    assert "Alert not sent" not in caplog.text


def test_nothing_found_sends_nothing(settings: Settings, webhook: StubServer) -> None:
    assert notify(with_webhook(settings, webhook.url + HOOK), drift(False), quality(False)) == []
    assert webhook.received == []


@pytest.mark.parametrize(
    ("answer", "expected"),
    [((500, "no"), "it answered 500"), ((404, "no"), "it answered 404")],
)
def test_a_failing_webhook_is_one_masked_line(
    webhook: StubServer,
    caplog: pytest.LogCaptureFixture,
    answer: tuple[int, Any],
    expected: str,
) -> None:
    webhook.routes[HOOK] = lambda _: answer

    assert not send(webhook.url + HOOK, {"text": "hi"})
    assert f"Alert not sent to http://127.0.0.1/***: {expected}" in caplog.text
    assert "secret-token" not in caplog.text


def test_an_unreachable_webhook_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    with serving(StubServer()) as stopped:
        url = stopped.url + HOOK
    # stopped and closed: nothing listens on that port any more

    assert not send(url, {"text": "hi"})
    assert "Alert not sent to http://127.0.0.1/***" in caplog.text


def test_only_http_urls(caplog: pytest.LogCaptureFixture) -> None:
    assert not send("file:///etc/passwd", {"text": "hi"})
    assert "must be an http(s) URL" in caplog.text


def test_mask_keeps_only_scheme_and_host() -> None:
    assert mask("https://hooks.slack.com/services/T/B/X?token=1") == "https://hooks.slack.com/***"


def test_monitor_alerts_and_keeps_its_exit_status_when_the_webhook_fails(
    settings: Settings,
    labelled_traffic: Traffic,
    webhook: StubServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    prepare(settings)  # the drift check's reference
    path = settings.bundle_dir / METADATA_FILE
    metadata = json.loads(path.read_text())
    metadata["metrics"] = {"f1_macro": 0.9} if TASK == "classification" else {"rmse": 5.0}
    path.write_text(json.dumps(metadata))
    labelled_traffic(rows=40, labelled=40, wrong=True)
    monkeypatch.setenv("ML_MONITORING__ALERT_WEBHOOK_URL", webhook.url + HOOK)
    runner = CliRunner()

    assert runner.invoke(app, ["monitor", "--fail-on-degradation"]).exit_code == 1
    assert "Model version 1: live" in webhook.bodies(HOOK)[0]["text"]

    webhook.routes[HOOK] = lambda _: (500, "down")
    assert runner.invoke(app, ["monitor", "--fail-on-degradation"]).exit_code == 1
    assert runner.invoke(app, ["monitor"]).exit_code == 0
    assert "Alert not sent to http://127.0.0.1/***: it answered 500" in caplog.text
