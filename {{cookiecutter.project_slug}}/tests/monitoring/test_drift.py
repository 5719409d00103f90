"""Drift monitoring: real Evidently reports on tiny data read from a real SQLite prediction log."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from {{ cookiecutter.package_name }}.cli import app
from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.monitoring.drift import MonitoringError, monitor
from {{ cookiecutter.package_name }}.monitoring.simulate import shift, to_records
from {{ cookiecutter.package_name }}.prediction_log.tables import PredictionLogError, PredictionRecord
from {{ cookiecutter.package_name }}.prediction_log.writer import PredictionLog
from {{ cookiecutter.package_name }}.processed import NoProcessedDataError, schema_path
from {{ cookiecutter.package_name }}.schema import Schema


def make_frame(rows: int, seed: int) -> pd.DataFrame:
    """Float, integer and string features (with missing values) and a target, of any size."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "age": rng.normal(50, 10, rows).round(1),
            "visits": rng.integers(0, 6, rows),
            "plan": rng.choice(["basic", "plus", "pro"], rows).astype(object),
            "score": rng.normal(0, 1, rows),
            "target": rng.choice(["no", "yes"], rows),
        }
    )
    df.loc[::11, "age"] = np.nan
    df.loc[::13, "plan"] = None
    return df


def write_reference(settings: Settings, rows: int = 400) -> Schema:
    """What the data stage leaves for monitoring: schema.json and reference.parquet."""
    reference = make_frame(rows, seed=1)
    schema = Schema.infer(reference, "target", settings.task)
    schema.save(schema_path(settings.data.processed_dir))
    reference.to_parquet(settings.data.processed_dir / "reference.parquet")
    return schema


def log_predictions(settings: Settings, features: pd.DataFrame, version: str = "1") -> None:
    """Append rows to the prediction log the way the service does."""
    store = PredictionLog(settings.prediction_log.url)
    store.start()
    call = uuid.uuid4().hex  # each call logs new requests: request_id + row_index is unique
    store.log(
        [
            PredictionRecord(
                f"{call}-{i}", row_index=0, model_version=version, features=row, prediction=0
            )
            for i, row in enumerate(to_records(features))
        ]
    )
    store.close(budget=10)


def traffic(schema: Schema, rows: int, drift: bool = False, seed: int = 2) -> pd.DataFrame:
    features = make_frame(rows, seed=seed)[schema.names]
    return shift(features, schema) if drift else features


def test_no_drift_on_traffic_like_the_reference(settings: Settings) -> None:
    schema = write_reference(settings)
    log_predictions(settings, traffic(schema, 150))

    summary = monitor(settings)

    assert not summary.drift_detected
    assert summary.drifted_share < settings.monitoring.drift_share
    assert summary.rows_compared == 150
    assert summary.report_path.is_file()


def test_drift_in_numeric_and_categorical_features(settings: Settings) -> None:
    schema = write_reference(settings)
    log_predictions(settings, traffic(schema, 150, drift=True))

    summary = monitor(settings)

    assert summary.drift_detected
    assert {"age", "score", "plan"} <= set(summary.drifted_columns)
    assert summary.columns["plan"].drifted


def test_only_the_latest_window_is_compared(settings: Settings) -> None:
    schema = write_reference(settings)
    log_predictions(settings, traffic(schema, 300, drift=True), version="1")
    log_predictions(settings, traffic(schema, settings.monitoring.window), version="2")

    summary = monitor(settings)

    assert not summary.drift_detected
    assert summary.rows_compared == settings.monitoring.window
    assert summary.model_versions == ("2",)


@pytest.mark.parametrize(
    ("reference_rows", "kind"), [(400, "p_value"), (1500, "distance")], ids=["small", "large"]
)
def test_column_verdicts_follow_the_direction_of_the_test(
    settings: Settings, reference_rows: int, kind: str
) -> None:
    """Up to 1000 reference rows Evidently tests p-values (low = drift), beyond that distances
    (high = drift); each column's verdict must agree with its own method."""
    schema = write_reference(settings, rows=reference_rows)
    # Half of the reference rows as traffic: distances on small samples are noisy.
    features = make_frame(reference_rows, seed=1)[schema.names].sample(frac=0.5, random_state=0)
    drifted = shift(features, schema)
    log_predictions(settings, features.assign(age=drifted["age"], plan=drifted["plan"]))
    settings.monitoring.window = len(features)

    summary = monitor(settings)

    assert all(kind in column.method for column in summary.columns.values())
    for column in summary.columns.values():
        beyond = (
            column.score < column.threshold
            if kind == "p_value"
            else column.score > column.threshold
        )
        assert column.drifted == beyond
    assert summary.drifted_columns == ("age", "plan")


def test_summary_json(settings: Settings) -> None:
    schema = write_reference(settings)
    log_predictions(settings, traffic(schema, 60, drift=True))

    summary = monitor(settings)

    saved = json.loads((settings.monitoring.reports_dir / "drift_summary.json").read_text())
    assert saved["drift_detected"] is True
    assert saved["rows_compared"] == 60
    assert saved["reference_rows"] == 400
    assert saved["window"] == settings.monitoring.window
    assert saved["model_versions"] == ["1"]
    assert saved["drifted_columns"] == list(summary.drifted_columns)
    assert set(saved["columns"]) == set(schema.names)
    assert set(saved["columns"]["age"]) == {"score", "drifted", "method", "threshold"}
    assert saved["first_prediction_at"] <= saved["last_prediction_at"]
    assert {"drifted_share", "drift_share_threshold", "generated_at", "report_path"} <= set(saved)
    assert Path(saved["report_path"]).read_text().lstrip().lower().startswith("<!doctype html")


def test_too_few_rows_is_a_clear_error_and_removes_the_old_report(settings: Settings) -> None:
    schema = write_reference(settings)
    log_predictions(settings, traffic(schema, 60))
    report = monitor(settings).report_path
    log_predictions(settings, traffic(schema, 5))
    settings.monitoring.min_rows = 100

    with pytest.raises(MonitoringError, match=r"Only 65 predictions logged, at least 100"):
        monitor(settings)
    assert not report.exists()
    assert not (report.parent / "drift_summary.json").exists()


def test_no_prediction_log_is_a_clear_error(settings: Settings) -> None:
    write_reference(settings)

    with pytest.raises(MonitoringError, match=r"Only 0 predictions logged.*make serve"):
        monitor(settings)
    assert not Path(settings.prediction_log.url.removeprefix("sqlite:///")).exists()


def test_an_unreadable_prediction_log_is_a_clear_error(settings: Settings) -> None:
    write_reference(settings)
    settings.prediction_log.url = "postgresql+nosuchdriver://monitor@db.example.com/log"

    with pytest.raises(PredictionLogError, match="Cannot read the prediction log"):
        monitor(settings)


def test_no_reference_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(NoProcessedDataError, match="make data"):
        monitor(settings)


def test_a_feature_missing_from_every_prediction_is_named(settings: Settings) -> None:
    schema = write_reference(settings)
    log_predictions(settings, traffic(schema, 60).drop(columns="score"))

    with pytest.raises(MonitoringError, match="score"):
        monitor(settings)


@pytest.mark.parametrize(
    ("reference", "cause"),
    [
        ("changed", "the data changed since model v1 was trained"),
        ("unchanged", "the clients stopped sending them. Fix the clients; retraining will not"),
    ],
)
def test_a_feature_in_no_prediction_is_told_apart_from_a_data_change(
    settings: Settings, bundle_dir: Path, reference: str, cause: str
) -> None:
    """The served model v1 takes age, visits, plan and score. A reference from changed data adds
    `region`, which v1 never took: retraining is the fix. Clients that stop sending `score`,
    which v1 takes, are not fixed by retraining."""
    frame = make_frame(400, seed=1)
    if reference == "changed":
        frame["region"] = np.resize(["north", "south"], len(frame))
    schema = Schema.infer(frame, "target", settings.task)
    schema.save(schema_path(settings.data.processed_dir))
    frame.to_parquet(settings.data.processed_dir / "reference.parquet")
    sent = make_frame(60, seed=2)[["age", "visits", "plan", "score"]]
    log_predictions(settings, sent if reference == "changed" else sent.drop(columns="score"))

    with pytest.raises(MonitoringError) as raised:
        monitor(settings)

    missing = "region" if reference == "changed" else "score"
    assert f"Feature(s) {missing} " in str(raised.value) and cause in str(raised.value)


def test_cli_fails_on_drift_only_when_asked(settings: Settings) -> None:
    schema = write_reference(settings)
    log_predictions(settings, traffic(schema, 60, drift=True))
    runner = CliRunner()

    assert runner.invoke(app, ["monitor"]).exit_code == 0
    assert runner.invoke(app, ["monitor", "--fail-on-drift"]).exit_code == 1
