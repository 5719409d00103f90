"""Reading the prediction log back: live traffic only, newest rows, labels, nothing created."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from {{ cookiecutter.package_name }}.prediction_log.feedback import Label, record
from {{ cookiecutter.package_name }}.prediction_log.reader import Reader
from {{ cookiecutter.package_name }}.prediction_log.tables import (
    LIVE,
    SHADOW,
    SMOKE,
    PredictionLogError,
    PredictionRecord,
    connect,
)
from {{ cookiecutter.package_name }}.prediction_log.writer import PredictionLog
from {{ cookiecutter.package_name }}.schema import Schema


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'predictions.db'}"


def write(url: str, records: list[PredictionRecord]) -> None:
    store = PredictionLog(url)
    store.start()
    store.log(records)
    store.close()


def record_of(request_id: str, i: int, version: str = "1", **kwargs: str) -> PredictionRecord:
    features = {"age": 40.0 + i, "plan": None if i % 3 else "pro", "visits": i}
    return PredictionRecord(request_id, i, version, features, "yes" if i % 2 else "no", **kwargs)


def test_latest_is_the_newest_live_rows_oldest_first(url: str) -> None:
    write(url, [record_of("r", i, version=str(i)) for i in range(5)])

    logged = Reader(url).latest(2)

    assert list(logged.columns[:3]) == ["created_at", "model_version", "prediction"]
    assert set(logged.columns[3:]) == {"age", "plan", "visits"}
    assert logged["model_version"].tolist() == ["3", "4"]
    assert logged["age"].tolist() == [43.0, 44.0]
    assert pd.api.types.is_numeric_dtype(logged["age"])
    assert str(logged["created_at"].dt.tz) == "UTC"


def test_smoke_and_shadow_rows_are_not_traffic(url: str) -> None:
    write(
        url,
        [
            record_of("live", 0),
            record_of("smoke", 0, traffic=SMOKE),
            record_of("live", 0, version="2", model_role="challenger", traffic=SHADOW),
        ],
    )
    reader = Reader(url)

    assert len(reader.latest(10)) == 1
    assert reader.count() == 3
    answers = reader.answers({"1", "2"})  # compare pairs the shadow score with the answer
    assert set(answers) == {"1", "2"}
    assert ("smoke", 0) not in answers["1"]


def test_labelled_rows_join_live_predictions_and_their_labels(url: str) -> None:
    write(url, [record_of("a", 0), record_of("a", 1), record_of("b", 0, traffic=SMOKE)])
    schema = Schema("target", "classification", (), classes=("no", "yes"))
    record(connect(url), [Label("a", 1, "no"), Label("b", None, "no")], schema)

    labelled = Reader(url).labelled(10)

    assert list(labelled.columns) == ["created_at", "model_version", "prediction", "actual"]
    assert labelled[["prediction", "actual"]].values.tolist() == [["yes", "no"]]
    assert Reader(url).labels() == {("a", 1): "no", ("b", 0): "no"}


def test_a_log_without_tables_reads_as_empty(url: str, tmp_path: Path) -> None:
    (tmp_path / "predictions.db").touch()

    assert Reader(url).latest(10).empty
    assert Reader(url).labelled(10).empty
    assert Reader(url).count() == 0


def test_a_missing_log_reads_as_empty_and_is_not_created(url: str, tmp_path: Path) -> None:
    assert Reader(url).latest(10).empty
    assert Reader(url).count() == 0
    assert not (tmp_path / "predictions.db").exists()


def test_an_unreadable_log_is_a_clear_error() -> None:
    with pytest.raises(PredictionLogError, match="Cannot read the prediction log"):
        Reader("postgresql+nosuchdriver://monitor@db.example.com/log").latest(10)


def test_live_is_the_default_traffic() -> None:
    assert record_of("r", 0).traffic == LIVE
