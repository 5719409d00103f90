"""`make compare` on a real prediction log filled by the service in shadow mode."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Column, Integer, MetaData, Table, Text, create_engine

from {{ cookiecutter.package_name }}.bundle import load_bundle
from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.monitoring.compare import SUMMARY_FILE, CompareError, compare
from {{ cookiecutter.package_name }}.runtimes import load_runtime
from {{ cookiecutter.package_name }}.schema import Schema
from {{ cookiecutter.package_name }}.serving.app import create_app

BATCH = 3  # rows per request: pairs are matched by request id and row index


def with_rollout(settings: Settings, mode: str) -> Settings:
    serving = settings.serving.model_copy(update={"rollout": mode})
    return settings.model_copy(update={"serving": serving})


def add_feedback(settings: Settings, labels: list[tuple[str, int, Any]]) -> None:
    """Rows of the `feedback` table as POST /feedback stores them."""
    engine = create_engine(settings.prediction_log.url)
    table = Table(
        "feedback",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("request_id", Text),
        Column("row_index", Integer),
        Column("actual", Text),
        Column("received_at", Text),
    )
    table.create(engine, checkfirst=True)
    received = datetime.now(UTC).isoformat()
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"request_id": r, "row_index": i, "actual": json.dumps(a), "received_at": received}
                for r, i, a in labels
            ],
        )


def test_compare_pairs_shadowed_rows_and_scores_the_labelled_ones(
    settings: Settings, challenger_dir: Path, frame: pd.DataFrame, schema: Schema
) -> None:
    rows = json.loads(frame[schema.names].head(60).to_json(orient="records"))
    truth = frame[schema.target].head(60).tolist()
    with TestClient(create_app(with_rollout(settings, "shadow"))) as client:
        request_ids = [
            client.post("/predict", json={"instances": rows[i : i + BATCH]}).json()["request_id"]
            for i in range(0, len(rows), BATCH)
        ]
    labelled = range(0, len(rows), 2)  # feedback for every other row
    add_feedback(settings, [(request_ids[i // BATCH], i % BATCH, truth[i]) for i in labelled])

    result = compare(settings)

    ours, _ = load_runtime("onnx", load_bundle(settings.bundle_dir)).score(rows)
    theirs, _ = load_runtime("onnx", load_bundle(challenger_dir)).score(rows)
    assert (result.champion.version, result.challenger.version) == ("1", "2")
    assert result.champion.rows == result.challenger.rows == result.paired_rows == len(rows)
    assert result.champion.labelled == result.challenger.labelled == len(labelled)
    if schema.task == "classification":
        agree = sum(a == b for a, b in zip(ours, theirs, strict=True)) / len(rows)
        assert result.agreement == pytest.approx(agree)
        right = sum(str(ours[i]) == str(truth[i]) for i in labelled) / len(labelled)
        assert result.champion.live["accuracy"] == pytest.approx(right)
    else:
        diff = sum(abs(a - b) for a, b in zip(ours, theirs, strict=True)) / len(rows)
        assert result.mean_abs_difference == pytest.approx(diff)
        mae = sum(abs(ours[i] - truth[i]) for i in labelled) / len(labelled)
        assert result.champion.live["mae"] == pytest.approx(mae)
    summary = json.loads((settings.monitoring.reports_dir / SUMMARY_FILE).read_text())
    assert summary["challenger"]["version"] == "2"
    assert "not logged per row" in summary["latency"]


def test_compare_without_challenger_traffic_says_what_to_do(
    settings: Settings, challenger_dir: Path, frame: pd.DataFrame, schema: Schema
) -> None:
    with pytest.raises(CompareError, match="no answer of challenger v2: serve with"):
        compare(settings)


def test_compare_before_any_training_says_to_train(settings: Settings) -> None:
    with pytest.raises(CompareError, match=r"Nothing to compare: No model bundle in .*make train"):
        compare(settings)


def test_compare_without_a_challenger_says_how_one_is_made(
    settings: Settings, bundle_dir: Path
) -> None:
    """After one `make train` there is a champion: training again is not enough by itself."""
    with pytest.raises(CompareError, match="no challenger to compare with champion v1") as e:
        compare(settings)
    assert "does not beat the champion" in str(e.value) and "`make promote`" not in str(e.value)
    assert "run `make train` first" not in str(e.value)
