"""The HTTP service in-process: TestClient runs the lifespan, so the real bundle loads."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.pipeline import Pipeline

from conftest import Payload, replace_model
from {{ cookiecutter.package_name }}.bundle import ONNX_FILE, load_bundle
from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.prediction_log.reader import Reader
from {{ cookiecutter.package_name }}.schema import Schema
from {{ cookiecutter.package_name }}.serving.app import create_app
from {{ cookiecutter.package_name }}.serving.predictor import Predictor


def rows(frame: pd.DataFrame, schema: Schema, n: int) -> list[dict[str, Any]]:
    """JSON-ready rows as a client sends them (NaN -> null)."""
    records: list[dict[str, Any]] = json.loads(
        frame[schema.names].head(n).to_json(orient="records")
    )
    return records


@pytest.fixture
def client(settings: Settings, bundle_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def row(frame: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    """A row without missing values."""
    return rows(frame.dropna(), schema, 1)[0]


def logged(settings: Settings) -> pd.DataFrame:
    return Reader(settings.prediction_log.url).latest(10_000)


def test_health(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}


def test_ready_names_the_model_version(client: TestClient) -> None:
    response = client.get("/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "model_version": "1", "prediction_log": "ok"}


def test_metadata_describes_the_model(client: TestClient, schema: Schema) -> None:
    meta = client.get("/metadata").json()

    assert meta["name"] == "test-model"
    assert meta["version"] == "1"
    assert meta["task"] == schema.task
    assert meta["metrics"] == {"holdout": 1.0}
    assert [f["name"] for f in meta["schema"]["features"]] == schema.names


def test_predict_answers_like_the_model(
    client: TestClient, settings: Settings, frame: pd.DataFrame, schema: Schema
) -> None:
    instances = rows(frame, schema, 8)  # includes missing values

    response = client.post("/predict", json={"instances": instances})

    assert response.status_code == 200
    answer = response.json()
    model = load_bundle(settings.bundle_dir).load_pipeline()  # what the ONNX model came from
    expected = model.predict(schema.frame(instances))
    assert answer["model_version"] == "1"
    assert len(answer["request_id"]) == 32
    if settings.task == "classification":
        assert answer["predictions"] == expected.tolist()
        assert len(answer["probabilities"]) == 8
        for probabilities in answer["probabilities"]:
            assert set(probabilities) == {str(c) for c in model.classes_}
            assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    else:
        assert answer["predictions"] == pytest.approx(expected.tolist(), rel=1e-4)
        assert "probabilities" not in answer


def test_every_row_is_logged(
    settings: Settings, bundle_dir: Path, frame: pd.DataFrame, schema: Schema
) -> None:
    instances = rows(frame, schema, 5)
    with TestClient(create_app(settings)) as client:
        first = client.post("/predict", json={"instances": instances}).json()
        second = client.post("/predict", json={"instances": instances[:1]}).json()
    # leaving the `with` ran the shutdown, which flushes the log

    log = logged(settings)
    assert len(log) == 6
    assert log["prediction"].tolist() == first["predictions"] + second["predictions"]
    assert (log["model_version"] == "1").all()
    assert log[schema.names].iloc[1].to_dict() == pytest.approx(instances[1])
    assert first["request_id"] != second["request_id"]


def test_the_model_runs_off_the_event_loop(
    client: TestClient, row: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = []
    real_predict = Predictor.predict

    def spy(self: Predictor, instances: list[dict[str, Any]], *args: Any) -> Any:
        threads.append(threading.current_thread())
        return real_predict(self, instances, *args)

    monkeypatch.setattr(Predictor, "predict", spy)
    client.post("/predict", json={"instances": [row]})

    assert threads and threads[0] is not threading.main_thread()


def test_integers_may_come_as_whole_floats(client: TestClient, row: dict[str, Any]) -> None:
    response = client.post("/predict", json={"instances": [{**row, "visits": 3.0}]})

    assert response.status_code == 200


def test_null_where_the_schema_allows_it(client: TestClient, row: dict[str, Any]) -> None:
    response = client.post("/predict", json={"instances": [{**row, "age": None, "plan": None}]})

    assert response.status_code == 200


def body(row: dict[str, Any], **changes: Any) -> str:
    return json.dumps({"instances": [{**row, **changes}]})


def raw(row: dict[str, Any], field: str, literal: str) -> str:
    """A body whose `field` is written as `literal` (NaN, 1e999: what json.dumps cannot say)."""
    return body(row, **{field: "__literal__"}).replace('"__literal__"', literal)


@pytest.mark.parametrize(
    ("make_body", "field"),
    [
        pytest.param(
            lambda r: json.dumps({"instances": [{k: v for k, v in r.items() if k != "score"}]}),
            "score",
            id="missing field",
        ),
        pytest.param(lambda r: body(r, bogus=1), "bogus", id="unknown field"),
        pytest.param(lambda r: body(r, age="old"), "age", id="text for a number"),
        pytest.param(lambda r: body(r, age=True), "age", id="boolean for a number"),
        pytest.param(lambda r: body(r, visits="3"), "visits", id="text for an integer"),
        pytest.param(lambda r: body(r, visits=2.5), "visits", id="fraction for an integer"),
        pytest.param(lambda r: body(r, plan=7), "plan", id="number for a category"),
        pytest.param(lambda r: body(r, score=None), "score", id="null where not nullable"),
        pytest.param(lambda r: raw(r, "score", "NaN"), "score", id="NaN"),
        pytest.param(lambda r: raw(r, "score", "Infinity"), "score", id="Infinity"),
        pytest.param(lambda r: raw(r, "score", "-Infinity"), "score", id="-Infinity"),
        pytest.param(lambda r: raw(r, "score", "1e999"), "score", id="overflowing number"),
        pytest.param(lambda r: json.dumps({"instances": []}), "instances", id="empty batch"),
        pytest.param(lambda r: json.dumps({"rows": [r]}), "instances", id="no instances"),
        pytest.param(lambda r: json.dumps({"instances": r}), "instances", id="not a list"),
        pytest.param(lambda r: json.dumps({"instances": [1]}), "instances", id="row not object"),
        pytest.param(lambda r: json.dumps([r]), "body", id="body not an object"),
        pytest.param(lambda r: body(r)[:-5], "body", id="malformed JSON"),
        pytest.param(lambda r: "", "body", id="empty body"),
    ],
)  # fmt: skip
def test_bad_input_is_a_422_naming_the_field(
    client: TestClient,
    row: dict[str, Any],
    make_body: Any,
    field: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    response = client.post(
        "/predict", content=make_body(row), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(field in error["loc"] for error in errors), errors
    assert all(error["msg"] for error in errors)
    echoed = [error["input"] for error in errors if "input" in error]
    assert all(not isinstance(v, dict | list) and len(str(v)) < 20 for v in echoed), echoed
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_nan_is_echoed_as_text(client: TestClient, row: dict[str, Any]) -> None:
    detail = client.post(
        "/predict", content=raw(row, "score", "NaN"), headers={"Content-Type": "application/json"}
    ).json()["detail"]

    assert detail[0]["input"] == "nan"
    assert detail[0]["loc"] == ["body", "instances", 0, "score"]


def test_a_batch_over_the_limit_is_a_413(
    client: TestClient, settings: Settings, row: dict[str, Any]
) -> None:
    limit = settings.serving.max_batch_size

    response = client.post("/predict", json={"instances": [row] * (limit + 1)})

    assert response.status_code == 413
    assert f"at most {limit}" in response.json()["detail"]
    assert client.post("/predict", json={"instances": [row] * limit}).status_code == 200


def test_a_huge_body_is_a_413_before_parsing(client: TestClient) -> None:
    huge = b'{"instances": [' + b" " * 5_000_000 + b"]}"

    response = client.post("/predict", content=huge, headers={"Content-Type": "application/json"})

    assert response.status_code == 413
    assert "fewer instances" in response.json()["detail"]


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe"])
def test_feedback_that_is_not_json_is_a_422_like_predict(client: TestClient, body: bytes) -> None:
    headers = {"Content-Type": "application/json"}

    answers = [
        client.post(path, content=body, headers=headers) for path in ("/feedback", "/predict")
    ]

    assert [answer.status_code for answer in answers] == [422, 422]
    for answer in answers:
        [error] = answer.json()["detail"]
        assert error["type"] == "json_invalid"
        assert error["loc"] == ["body"]


@pytest.mark.parametrize(
    "content_type",
    [None, "application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"],
)
def test_predict_takes_json_only(
    client: TestClient, settings: Settings, row: dict[str, Any], content_type: str | None
) -> None:
    """What a web page can post cross-site without asking (a form, plain text) is refused."""
    headers = {} if content_type is None else {"Content-Type": content_type}

    response = client.post("/predict", content=body(row), headers=headers)

    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]
    assert logged(settings).empty
    charset = {"Content-Type": "application/json; charset=utf-8"}
    assert client.post("/predict", content=body(row), headers=charset).status_code == 200


@pytest.mark.parametrize("value", [1e308, -1e308, 1e38, 10**30])
def test_extreme_values_never_crash_the_model(
    client: TestClient, row: dict[str, Any], value: float
) -> None:
    response = client.post("/predict", json={"instances": [{**row, "score": value, "age": value}]})

    assert response.status_code in (200, 422)
    if response.status_code == 422:
        assert "cannot score" in response.json()["detail"]


class BrokenSession:
    """Stands in for the ONNX session: every output is `value` (what a broken model gives)."""

    def __init__(self, value: float, width: int) -> None:
        self.value, self.width = value, width

    def run(self, names: list[str], feed: dict[str, Any]) -> list[Any]:
        rows = len(next(iter(feed.values())))
        return [np.full((rows, self.width), self.value)]


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["NaN output", "infinite output"])
def test_what_the_model_cannot_score_is_a_422(
    client: TestClient, row: dict[str, Any], value: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = client.app.state.service.predictor.champion.runtime
    monkeypatch.setattr(runtime, "session", BrokenSession(value, max(len(runtime.classes), 1)))

    response = client.post("/predict", json={"instances": [row]})

    assert response.status_code == 422
    assert "cannot score" in response.json()["detail"]


def test_not_ready_without_a_bundle(
    settings: Settings, row: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        predict = client.post("/predict", json={"instances": [row]})
        metadata = client.get("/metadata")

    assert ready.status_code == predict.status_code == metadata.status_code == 503
    assert ready.json() == {"detail": "Not ready: no usable model bundle; the server log says why."}
    assert predict.json() == ready.json()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "make train" in errors[0].getMessage()
    assert errors[0].exc_info is None


def test_not_ready_when_the_model_file_was_changed(
    settings: Settings, bundle_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (bundle_dir / ONNX_FILE).open("ab") as fh:
        fh.write(b"tampered")

    with TestClient(create_app(settings)) as client:
        ready = client.get("/ready")

    assert ready.status_code == 503
    assert "no usable model bundle" in ready.json()["detail"]
    assert "sha256" in caplog.text
    assert "make train" in caplog.text


def test_not_ready_when_the_bundle_is_not_the_pinned_one(
    settings: Settings, bundle_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    serving = settings.serving.model_copy(update={"model_sha256": "0" * 64})

    with TestClient(create_app(settings.model_copy(update={"serving": serving}))) as client:
        ready = client.get("/ready")

    assert ready.status_code == 503
    assert "serving.model_sha256" in caplog.text
    assert "metadata.json" not in ready.text


def test_a_model_file_that_would_run_code_is_not_loaded(
    settings: Settings, bundle_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "marker"
    replace_model(bundle_dir, Pipeline([("evil", Payload(marker))]))
    serving = settings.serving.model_copy(update={"runtime": "sklearn"})

    with TestClient(create_app(settings.model_copy(update={"serving": serving}))) as client:
        ready = client.get("/ready")

    assert ready.status_code == 503
    assert "conftest.Payload" in caplog.text
    assert "serving.trusted_types" in caplog.text
    assert not marker.exists()


def test_not_ready_when_the_model_is_for_another_task(
    settings: Settings, bundle_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = "regression" if settings.task == "classification" else "classification"
    mismatched = settings.model_copy(update={"task": other})

    with TestClient(create_app(mismatched)) as client:
        ready = client.get("/ready")

    assert ready.status_code == 503
    assert f"task: {other}" in caplog.text


def test_not_ready_when_the_log_cannot_be_opened(
    settings: Settings, bundle_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    config = settings.prediction_log.model_copy(update={"url": f"sqlite:///{blocker}/p.db"})

    with TestClient(create_app(settings.model_copy(update={"prediction_log": config}))) as client:
        ready = client.get("/ready")

    assert ready.status_code == 503
    assert "prediction log" in ready.json()["detail"]
    assert str(tmp_path) not in ready.text  # paths and URLs go to the server log only
    assert "Check prediction_log in config.yaml" in caplog.text


def log_database_down(settings: Settings, tmp_path: Path, mode: str = "fail_open") -> Settings:
    """A PostgreSQL prediction log that refuses connections (nothing listens on port 1)."""
    config = settings.prediction_log.model_copy(
        update={
            "url": "postgresql+psycopg://ml:s3cret-pw@127.0.0.1:1/predictions",
            "spool": tmp_path / "spool",
            "mode": mode,
        }
    )
    return settings.model_copy(update={"prediction_log": config})


def spooled(spool: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(spool / "spool.db") as conn:
        return list(conn.execute("SELECT request_id, row_index FROM rows ORDER BY id"))


def test_a_log_database_down_at_start_is_waited_for_and_rows_are_spooled(
    settings: Settings,
    bundle_dir: Path,
    tmp_path: Path,
    row: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with TestClient(create_app(log_database_down(settings, tmp_path))) as client:
        ready = client.get("/ready")
        answer = client.post("/predict", json={"instances": [row, row]})

    assert ready.status_code == 200
    assert ready.json()["prediction_log"] == "degraded"
    assert answer.status_code == 200
    request_id = answer.json()["request_id"]
    assert spooled(tmp_path / "spool") == [
        (request_id, 0),
        (request_id, 1),
    ]
    assert "127.0.0.1" not in ready.text
    assert "postgresql+psycopg://ml:***@127.0.0.1:1/predictions" in caplog.text
    assert "s3cret-pw" not in caplog.text
    assert "2 left in the spool" in caplog.text


def test_fail_closed_answers_503_while_the_log_database_is_down(
    settings: Settings, bundle_dir: Path, tmp_path: Path, row: dict[str, Any]
) -> None:
    with TestClient(create_app(log_database_down(settings, tmp_path, "fail_closed"))) as client:
        ready = client.get("/ready")
        answer = client.post("/predict", json={"instances": [row]})
        health = client.get("/health")

    assert ready.status_code == answer.status_code == 503
    assert answer.headers["Retry-After"] == "1"
    assert "prediction log" in answer.json()["detail"]
    assert health.status_code == 200
    assert spooled(tmp_path / "spool") == []


def test_docs_show_the_real_features(client: TestClient, schema: Schema) -> None:
    spec = client.get("/openapi.json").json()

    body_ref = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body_ref["schema"]["$ref"] == "#/components/schemas/PredictRequest"
    instance = spec["components"]["schemas"]["Instance"]
    assert list(instance["properties"]) == schema.names
    example = spec["components"]["schemas"]["PredictRequest"]["examples"][0]
    assert set(example["instances"][0]) == set(schema.names)
    assert {"413", "422", "503"} <= set(spec["paths"]["/predict"]["post"]["responses"])
    assert client.get("/docs").status_code == 200


def request_example(client: TestClient) -> dict[str, Any]:
    spec = client.get("/openapi.json").json()
    example: dict[str, Any] = spec["components"]["schemas"]["PredictRequest"]["examples"][0]
    return example


def test_docs_example_is_a_held_out_row(
    settings: Settings, bundle_dir: Path, frame: pd.DataFrame, schema: Schema
) -> None:
    """Not each feature's midpoint (a row that never occurs) but the first row of
    sample_request.json, which `make train` writes from the held-out data."""
    held_out = rows(frame.iloc[100:], schema, 5)
    (bundle_dir / "sample_request.json").write_text(json.dumps({"instances": held_out}))

    with TestClient(create_app(settings)) as client:
        example = request_example(client)
        answer = client.post("/predict", json=example)

    assert example == {"instances": held_out[:1]}
    assert answer.status_code == 200


@pytest.mark.parametrize("sample", ["not JSON", json.dumps({"instances": [{"bogus": 1}]})])
def test_docs_example_without_a_usable_sample_is_still_valid(
    settings: Settings, bundle_dir: Path, schema: Schema, sample: str
) -> None:
    (bundle_dir / "sample_request.json").write_text(sample)

    with TestClient(create_app(settings)) as client:
        example = request_example(client)
        answer = client.post("/predict", json=example)

    assert set(example["instances"][0]) == set(schema.names)
    assert answer.status_code == 200


def test_docs_load_swagger_ui_from_the_service_not_a_cdn(client: TestClient) -> None:
    page = client.get("/docs")

    assert page.status_code == 200
    assert "://" not in page.text  # nothing from another host: /docs works offline
    assert "url: '/openapi.json'" in page.text
    assets = {url: client.get(url) for url in re.findall(r'(?:src|href)="([^"]+)"', page.text)}
    assert [answer.status_code for answer in assets.values()] == [200, 200, 200], list(assets)
    # Python 3.11 names .js files application/javascript, 3.12 text/javascript
    types = {answer.headers["content-type"].split(";")[0] for answer in assets.values()}
    types = {kind.replace("application/javascript", "text/javascript") for kind in types}
    assert types == {"text/javascript", "text/css", "image/png"}
    assert 'path="/docs-assets",status="200"' in client.get("/metrics").text


def test_metrics_count_requests_and_predictions(
    client: TestClient, row: dict[str, Any], settings: Settings
) -> None:
    client.post("/predict", json={"instances": [row, row]})
    client.post("/predict", json={"instances": []})
    client.get("/nowhere")

    text = client.get("/metrics").text

    assert 'http_requests_total{method="POST",path="/predict",status="200"}' in text
    assert 'http_requests_total{method="POST",path="/predict",status="422"}' in text
    assert 'path="unmatched",status="404"' in text
    assert 'http_request_duration_seconds_bucket{le="0.005",method="POST",path="/predict"}' in text
    if settings.task == "classification":
        assert 'predictions_total{label="' in text
    else:
        assert 'prediction_value_count{model_version="1"}' in text


def test_model_answers_are_plain_json_numbers(client: TestClient, row: dict[str, Any]) -> None:
    answer = client.post("/predict", json={"instances": [row]}).json()

    assert isinstance(answer["predictions"][0], str | int | float)
    assert not isinstance(answer["predictions"][0], np.generic)
