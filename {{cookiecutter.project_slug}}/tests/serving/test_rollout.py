"""serving.rollout: the champion answers, the challenger shadows it or answers a stable share."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from {{ cookiecutter.package_name }}.bundle import METADATA_FILE, load_bundle, sha256
from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.prediction_log.tables import connect, predictions
from {{ cookiecutter.package_name }}.runtimes import load_runtime
from {{ cookiecutter.package_name }}.schema import Schema
from {{ cookiecutter.package_name }}.serving.app import create_app
from {{ cookiecutter.package_name }}.serving.predictor import in_canary

REQUESTS = 2000


def with_rollout(settings: Settings, mode: str, share: float = 0.1) -> Settings:
    serving = settings.serving.model_copy(update={"rollout": mode, "canary_share": share})
    return settings.model_copy(update={"serving": serving})


def records(frame: pd.DataFrame, schema: Schema) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(frame[schema.names].to_json(orient="records"))
    return rows


def logged_rows(settings: Settings) -> list[Any]:
    with connect(settings.prediction_log.url).connect() as conn:
        return list(conn.execute(select(predictions).order_by(predictions.c.id)))


@pytest.mark.parametrize("share", [0.05, 0.2, 0.5])
def test_canary_takes_its_share_of_keys_within_tolerance(share: float) -> None:
    chosen = sum(in_canary(f"request-{i}", share) for i in range(REQUESTS))

    # 4 standard deviations of a binomial share over 2,000 keys
    tolerance = 4 * (share * (1 - share) / REQUESTS) ** 0.5
    assert abs(chosen / REQUESTS - share) < tolerance


def test_canary_choice_is_stable_per_key_and_bounded() -> None:
    keys = [f"user-{i}" for i in range(200)]

    assert [in_canary(k, 0.3) for k in keys] == [in_canary(k, 0.3) for k in keys]
    assert not any(in_canary(k, 0.0) for k in keys)
    assert all(in_canary(k, 1.0) for k in keys)
    # a bigger share only adds keys: a user in a 10% canary stays in it at 30%
    assert all(in_canary(k, 0.3) for k in keys if in_canary(k, 0.1))


def test_shadow_never_changes_an_answer(
    settings: Settings, challenger_dir: Path, frame: pd.DataFrame, schema: Schema
) -> None:
    rows = records(frame, schema)
    champion = load_runtime("onnx", load_bundle(settings.bundle_dir))
    challenger = load_runtime("onnx", load_bundle(challenger_dir))
    # one row per call, as the requests below send them (a batch may round floats differently)
    expected = [champion.score([row])[0][0] for row in rows]
    assert expected != [challenger.score([row])[0][0] for row in rows]  # it would answer otherwise

    with TestClient(create_app(with_rollout(settings, "shadow"))) as client:
        answers = [client.post("/predict", json={"instances": [row]}).json() for row in rows]

    assert [a["predictions"][0] for a in answers] == expected
    assert {a["model_version"] for a in answers} == {"1"}
    logged = logged_rows(settings)  # the lifespan's shutdown waited for the shadow rows
    by_version = {v: [r for r in logged if r.model_version == v] for v in ("1", "2")}
    assert len(by_version["1"]) == len(by_version["2"]) == len(rows)
    assert [r.request_id for r in by_version["1"]] == [a["request_id"] for a in answers]
    assert {r.request_id for r in by_version["2"]} == {a["request_id"] for a in answers}


def test_canary_answers_its_share_with_the_challenger_by_request_key(
    settings: Settings, challenger_dir: Path, frame: pd.DataFrame, schema: Schema
) -> None:
    row = records(frame, schema)[0]
    keys = [f"customer-{i}" for i in range(100)] * 2  # every key twice

    with TestClient(create_app(with_rollout(settings, "canary", share=0.3))) as client:
        versions = [
            client.post(
                "/predict", json={"instances": [row]}, headers={"X-Request-Key": key}
            ).json()["model_version"]
            for key in keys
        ]

    assert versions == ["2" if in_canary(key, 0.3) else "1" for key in keys]
    assert 10 < versions.count("2") / 2 < 50
    assert [r.model_version for r in logged_rows(settings)] == versions


def test_rollout_without_a_challenger_serves_the_champion_and_says_so(
    settings: Settings, bundle_dir: Path, frame: pd.DataFrame, schema: Schema, caplog: Any
) -> None:
    row = records(frame, schema)[0]
    with (
        caplog.at_level(logging.WARNING),
        TestClient(create_app(with_rollout(settings, "canary", share=1.0))) as client,
    ):
        answer = client.post("/predict", json={"instances": [row]})

    assert answer.status_code == 200
    assert answer.json()["model_version"] == "1"
    assert "serving.rollout is canary; serving the champion alone: No model bundle" in caplog.text


def test_a_pinned_champion_serves_no_challenger(
    settings: Settings, challenger_dir: Path, frame: pd.DataFrame, schema: Schema, caplog: Any
) -> None:
    """serving.model_sha256 pins the champion only: a challenger nobody pinned (here, one that
    would answer every request) is not served, and the log says why."""
    row = records(frame, schema)[0]
    pinned = with_rollout(settings, "canary", share=1.0)
    pin = sha256(settings.bundle_dir / METADATA_FILE)
    serving = pinned.serving.model_copy(update={"model_sha256": pin})
    with (
        caplog.at_level(logging.WARNING),
        TestClient(create_app(pinned.model_copy(update={"serving": serving}))) as client,
    ):
        answer = client.post("/predict", json={"instances": [row]})
        metadata = client.get("/metadata").json()

    assert answer.status_code == 200
    assert answer.json()["model_version"] == "1"
    assert (metadata["rollout"], metadata["challenger_version"]) == ("off", None)
    assert "serving.model_sha256 pins the champion only" in caplog.text
