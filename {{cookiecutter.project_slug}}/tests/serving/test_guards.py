"""The service's guards in-process: the API key, HEAD, and short 422 echoes.

The concurrency limit and the request timeout need a real server: see test_server.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.routing import Route

from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.schema import Schema
from {{ cookiecutter.package_name }}.serving.app import create_app
from {{ cookiecutter.package_name }}.serving.routes import router

KEY = "k3y-for-tests"


@pytest.fixture
def row(frame: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(
        frame[schema.names].dropna().head(1).to_json(orient="records")
    )[0]
    return record


@pytest.fixture
def keyed(settings: Settings, bundle_dir: Path) -> Iterator[TestClient]:
    """The service with serving.api_key set."""
    serving = settings.serving.model_copy(update={"api_key": SecretStr(KEY)})
    with TestClient(create_app(settings.model_copy(update={"serving": serving}))) as client:
        yield client


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-key", f"Basic {KEY}", f"Bearer {KEY}x", "Bearer"]
)
def test_with_an_api_key_predict_needs_it(
    keyed: TestClient, row: dict[str, Any], authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}

    refused = keyed.post("/predict", json={"instances": [row]}, headers=headers)
    allowed = keyed.post(
        "/predict", json={"instances": [row]}, headers={"Authorization": f"Bearer {KEY}"}
    )

    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert KEY not in refused.text
    assert allowed.status_code == 200


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/docs", "/openapi.json"])
def test_with_an_api_key_reading_routes_stay_open(keyed: TestClient, path: str) -> None:
    assert keyed.get(path).status_code == 200


def test_what_the_guard_answers_is_counted_under_its_route(
    keyed: TestClient, row: dict[str, Any]
) -> None:
    keyed.post("/predict", json={"instances": [row]})
    keyed.head("/metadata")

    text = keyed.get("/metrics").text

    assert 'http_requests_total{method="POST",path="/predict",status="401"}' in text
    assert 'http_requests_total{method="HEAD",path="/metadata",status="200"}' in text
    assert 'path="unmatched",status="401"' not in text


def test_docs_can_send_the_api_key(keyed: TestClient) -> None:
    spec = keyed.get("/openapi.json").json()

    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert spec["paths"]["/predict"]["post"]["security"] == [{"HTTPBearer": []}]


def test_without_an_api_key_predict_is_open(
    settings: Settings, bundle_dir: Path, row: dict[str, Any]
) -> None:
    with TestClient(create_app(settings)) as client:
        assert client.post("/predict", json={"instances": [row]}).status_code == 200


def get_routes(client: TestClient) -> list[str]:
    """Every GET route of the app (its own and FastAPI's) that takes no path parameter."""
    routes = [r for r in [*router.routes, *client.app.routes] if isinstance(r, APIRoute | Route)]
    return [r.path for r in routes if "GET" in (r.methods or ()) and "{" not in r.path]


def test_head_works_on_every_get_route(settings: Settings, bundle_dir: Path) -> None:
    with TestClient(create_app(settings)) as client:
        paths = get_routes(client)
        answers = {path: (client.get(path), client.head(path)) for path in paths}

    assert {"/health", "/ready", "/metadata", "/metrics", "/docs"} <= set(paths)
    for path, (get, head) in answers.items():
        assert head.status_code == get.status_code == 200, path
        assert head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"], path


def test_a_huge_bad_value_is_echoed_as_a_short_prefix(
    settings: Settings, bundle_dir: Path, schema: Schema, row: dict[str, Any]
) -> None:
    huge = "x" * 100_000  # under the body limit, so it reaches validation
    numeric = schema.numeric[0]

    with TestClient(create_app(settings)) as client:
        response = client.post("/predict", json={"instances": [{**row, numeric: huge}]})

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "instances", 0, numeric]
    assert error["input"].startswith("xxxx")
    assert "100000 characters" in error["input"]
    assert len(response.content) < 1000
