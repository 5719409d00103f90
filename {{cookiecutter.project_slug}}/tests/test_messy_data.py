"""A learner's own messy export, through data, serving{% if cookiecutter.include_monitoring %} and monitoring{% endif %}: the ID, the date and the
free text are never features, yet clients may send them; blank amounts are numbers."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from fastapi.testclient import TestClient

from {{ cookiecutter.package_name }}.bundle import save_bundle
from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.pipeline.data import prepare
from {{ cookiecutter.package_name }}.pipeline.features import build_pipeline
from {{ cookiecutter.package_name }}.pipeline.onnx_export import export_onnx
from {{ cookiecutter.package_name }}.prediction_log.reader import Reader
from {{ cookiecutter.package_name }}.processed import read_split
from {{ cookiecutter.package_name }}.serving.app import create_app

FAMILY = "{{ cookiecutter.model_family }}"


def serve_churn_model(settings: Settings) -> tuple[list[dict[str, Any]], list[str]]:
    """Prepare the churn CSV, fit and export a model; the held-out rows as a client sends them
    (every column of the export but the target), and the feature names."""
    schema = prepare(settings)
    split, _ = read_split(settings.data.processed_dir)
    model = build_pipeline(schema, FAMILY, random_state=0)
    model.fit(schema.model_input(split.train), split.train[schema.target])
    onnx_model, _ = export_onnx(model, schema, split.test)  # served by onnxruntime, as by default
    save_bundle(
        model,
        settings.bundle_dir,
        name="churn",
        version="1",
        run_id="r",
        metrics={},
        schema=schema,
        onnx_model=onnx_model,
    )
    whole_rows = split.test.drop(columns=schema.target)
    return json.loads(whole_rows.to_json(orient="records")), schema.names


def test_the_api_takes_rows_with_or_without_the_other_columns(churn_settings: Settings) -> None:
    rows, features = serve_churn_model(churn_settings)
    features_only = {name: rows[0][name] for name in features}
    features_only["TotalCharges"] = 286.5  # a number, although the CSV had text in that column
    with TestClient(create_app(churn_settings)) as client:
        without_id = client.post("/predict", json={"instances": [features_only]})
        whole = client.post("/predict", json={"instances": rows[:3]})
        unknown = client.post("/predict", json={"instances": [{**features_only, "Churn?": 1}]})

    assert without_id.status_code == 200, without_id.text
    assert whole.status_code == 200, whole.text
    assert unknown.status_code == 422
    logged = Reader(churn_settings.prediction_log.url).latest(10)
    ids = logged["customerID"].tolist()
    assert pd.isna(ids[0])  # not sent, not invented
    assert ids[1:] == [row["customerID"] for row in rows[:3]]
{%- if cookiecutter.include_monitoring %}


def test_unchanged_traffic_shows_no_drift_and_ids_are_not_compared(
    churn_settings: Settings,
) -> None:
    from {{ cookiecutter.package_name }}.monitoring.drift import monitor

    rows, _ = serve_churn_model(churn_settings)
    with TestClient(create_app(churn_settings)) as client:
        for start in range(0, len(rows), 20):
            response = client.post("/predict", json={"instances": rows[start : start + 20]})
            assert response.status_code == 200, response.text

    summary = monitor(churn_settings)

    assert not summary.drift_detected, summary.drifted_columns
    assert set(summary.columns) == {"plan", "tenure", "MonthlyCharges", "TotalCharges"}
{%- endif %}
