"""Ground truth through the real app (POST /feedback), stored in a real SQLite prediction log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.prediction_log.feedback import check_actual
from {{ cookiecutter.package_name }}.prediction_log.reader import Reader
from {{ cookiecutter.package_name }}.schema import Schema
from {{ cookiecutter.package_name }}.serving.app import create_app


@pytest.fixture
def client(settings: Settings, bundle_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def predict(client: TestClient, settings: Settings, frame: pd.DataFrame, rows: int) -> str:
    """POST `rows` rows; return the request id once the rows are in the log."""
    instances = json.loads(frame.drop(columns="target").head(rows).to_json(orient="records"))
    answer = client.post("/predict", json={"instances": instances}).json()
    engine = create_engine(settings.prediction_log.url)
    deadline = time.monotonic() + 10  # the log is written off the request path
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            query = text("SELECT count(*) FROM predictions WHERE request_id = :r")
            if conn.execute(query, {"r": answer["request_id"]}).scalar_one() == rows:
                return str(answer["request_id"])
        time.sleep(0.02)
    raise AssertionError("the rows never reached the prediction log")


def truth(schema: Schema, i: int) -> Any:
    """A valid true value for this task."""
    return schema.classes[i % len(schema.classes)] if schema.classes else float(i) + 0.5


def stored(settings: Settings) -> list[tuple[str, int, Any]]:
    engine = create_engine(settings.prediction_log.url)
    with engine.connect() as conn:
        query = text("SELECT request_id, row_index, actual FROM feedback ORDER BY id")
        return [(r, i, json.loads(a)) for r, i, a in conn.execute(query)]


def test_labels_are_stored_once_however_often_they_are_sent(
    client: TestClient, settings: Settings, frame: pd.DataFrame, schema: Schema
) -> None:
    batch = predict(client, settings, frame, 3)
    single = predict(client, settings, frame, 1)
    items = [{"request_id": batch, "index": i, "actual": truth(schema, i)} for i in range(3)]
    items.append({"request_id": single, "actual": truth(schema, 1)})  # one row: no index

    first = client.post("/feedback", json={"items": items})
    again = client.post("/feedback", json={"items": items})

    assert first.status_code == 200
    empty: list[Any] = []
    assert first.json() == {
        "accepted": 4,
        "duplicates": 0,
        "conflicts": empty,
        "unknown": empty,
        "invalid": empty,
    }
    assert again.json()["accepted"] == 0
    assert again.json()["duplicates"] == 4
    assert stored(settings) == [
        (batch, 0, truth(schema, 0)),
        (batch, 1, truth(schema, 1)),
        (batch, 2, truth(schema, 2)),
        (single, 0, truth(schema, 1)),
    ]


def test_a_different_second_label_is_a_conflict_and_the_first_stays(
    client: TestClient, settings: Settings, frame: pd.DataFrame, schema: Schema
) -> None:
    request_id = predict(client, settings, frame, 1)
    client.post(
        "/feedback", json={"items": [{"request_id": request_id, "actual": truth(schema, 0)}]}
    )

    answer = client.post(
        "/feedback", json={"items": [{"request_id": request_id, "actual": truth(schema, 1)}]}
    ).json()

    assert answer["accepted"] == 0
    assert answer["conflicts"] == [
        {
            "request_id": request_id,
            "index": None,
            "reason": f"already labelled {truth(schema, 0)!r}; kept",
        }
    ]
    assert stored(settings) == [(request_id, 0, truth(schema, 0))]


def test_unknown_and_invalid_items_are_listed_and_the_rest_stored(
    client: TestClient, settings: Settings, frame: pd.DataFrame, schema: Schema
) -> None:
    request_id = predict(client, settings, frame, 2)
    wrong = "maybe" if schema.classes else "high"
    items = [
        {"request_id": request_id, "index": 0, "actual": truth(schema, 0)},
        {"request_id": request_id, "index": 1, "actual": wrong},
        {"request_id": request_id, "index": 2, "actual": truth(schema, 0)},  # 2 rows only
        {"request_id": "no-such-request", "index": 0, "actual": truth(schema, 0)},
        {"request_id": request_id, "actual": truth(schema, 0)},  # 2 rows: index needed
    ]

    response = client.post("/feedback", json={"items": items})

    assert response.status_code == 200
    answer = response.json()
    assert answer["accepted"] == 1
    assert answer["unknown"] == [
        {"request_id": request_id, "index": 2, "reason": "that request had 2 row(s)"},
        {
            "request_id": "no-such-request",
            "index": 0,
            "reason": "no prediction logged with it (yet)",
        },
    ]
    assert [(i["index"], i["reason"].split(":")[0]) for i in answer["invalid"]] == [
        (1, f"actual {wrong!r} is not a class of the model ({', '.join(map(str, schema.classes))})")
        if schema.classes
        else (1, f"actual must be a number, not {wrong!r}"),
        (None, "index is required"),
    ]
    assert stored(settings) == [(request_id, 0, truth(schema, 0))]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"items": []}, 422),
        ({"items": [{"index": 0, "actual": 1}]}, 422),  # no request_id
        ({"items": [{"request_id": "r", "index": -1, "actual": 1}]}, 422),
        ({"items": [{"request_id": "r", "actual": 1}] * 51}, 413),  # max_batch_size is 50
    ],
    ids=["empty", "no-request-id", "negative-index", "too-many"],
)
def test_a_malformed_body_is_refused_as_a_whole(
    client: TestClient, body: dict[str, Any], status: int
) -> None:
    assert client.post("/feedback", json=body).status_code == status


def test_a_database_error_is_a_503_not_a_500(
    client: TestClient, settings: Settings, frame: pd.DataFrame, schema: Schema
) -> None:
    request_id = predict(client, settings, frame, 1)
    engine = create_engine(settings.prediction_log.url)
    with engine.begin() as conn:  # the log's table gone: every query on it fails
        conn.execute(text("ALTER TABLE predictions RENAME TO predictions_moved"))

    item = {"request_id": request_id, "actual": truth(schema, 0)}
    response = client.post("/feedback", json={"items": [item]})

    assert response.status_code == 503
    assert response.json() == {
        "detail": "The prediction log's database is not available: send again later."
    }


def test_the_write_guards_of_predict_apply(settings: Settings, bundle_dir: Path) -> None:
    serving = settings.serving.model_copy(update={"api_key": SecretStr("k3y")})
    body = {"items": [{"request_id": "r", "actual": 1}]}
    with TestClient(create_app(settings.model_copy(update={"serving": serving}))) as client:
        no_key = client.post("/feedback", json=body)
        form = client.post(
            "/feedback", content=json.dumps(body), headers={"Authorization": "Bearer k3y"}
        )
        allowed = client.post("/feedback", json=body, headers={"Authorization": "Bearer k3y"})

    assert no_key.status_code == 401
    assert form.status_code == 415  # no Content-Type: application/json
    assert allowed.status_code == 200


@pytest.mark.parametrize("value", [True, None, [1], {"a": 1}, float("inf")])
def test_values_that_are_never_a_label(schema: Schema, value: Any) -> None:
    with pytest.raises(ValueError, match="actual"):
        check_actual(value, schema)


def test_a_long_value_is_not_echoed_whole(schema: Schema) -> None:
    with pytest.raises(ValueError, match="actual") as error:
        check_actual("x" * 100_000, schema)
    assert len(str(error.value)) < 300


def test_whole_numbers_match_integer_classes() -> None:
    schema = Schema(target="t", task="classification", features=(), classes=(0, 1))

    assert check_actual(1.0, schema) == 1
    assert check_actual("1", schema) == 1


def test_labelled_rows_join_predictions_and_feedback(
    client: TestClient, settings: Settings, frame: pd.DataFrame, schema: Schema
) -> None:
    request_id = predict(client, settings, frame, 3)
    predict(client, settings, frame, 2)  # not labelled
    items = [{"request_id": request_id, "index": i, "actual": truth(schema, i)} for i in (0, 2)]
    client.post("/feedback", json={"items": items})

    labelled = Reader(settings.prediction_log.url).labelled(10)

    assert labelled["actual"].tolist() == [truth(schema, 0), truth(schema, 2)]
    assert (labelled["model_version"] == "1").all()
    assert list(labelled.columns) == ["created_at", "model_version", "prediction", "actual"]
