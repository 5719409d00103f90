"""Which columns become features, decided from the data and overridable in config.yaml."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.pipeline.columns import decide, mostly_numbers
from {{ cookiecutter.package_name }}.pipeline.data import DataError, prepare


def test_a_churn_export_gets_sensible_roles(
    churn_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    schema = prepare(churn_settings)

    roles = {other.name: other.role for other in schema.others}
    assert roles == {"customerID": "id", "signup_date": "date", "notes": "text"}
    assert schema.numeric == ["tenure", "MonthlyCharges", "TotalCharges"]
    assert schema.categorical == ["plan"]
    total = next(f for f in schema.features if f.name == "TotalCharges")
    assert total.dtype == "float" and total.nullable  # the blanks became missing numbers
    assert "customerID" in caplog.text and "named like an identifier" in caplog.text
    assert "'notes' is free text" in caplog.text  # a warning of its own


def test_config_decides_over_the_inference(churn_settings: Settings) -> None:
    data = churn_settings.data.model_copy(
        update={"id_columns": ["tenure"], "drop_columns": ["MonthlyCharges"]}
    )
    schema = prepare(churn_settings.model_copy(update={"data": data}))
    roles = {other.name: other.role for other in schema.others}
    assert roles["tenure"] == "id" and roles["MonthlyCharges"] == "dropped"
    assert schema.numeric == ["TotalCharges"]


def test_a_column_named_in_config_must_exist(churn_settings: Settings) -> None:
    data = churn_settings.data.model_copy(update={"drop_columns": ["Tenure"]})
    with pytest.raises(DataError, match="not in the data: Tenure"):
        prepare(churn_settings.model_copy(update={"data": data}))


@pytest.mark.parametrize(
    ("name", "values", "role"),
    [
        ("row", list(range(1, 61)), "id"),  # a row number
        ("amount", [*range(60, 0, -1), 3], "numeric"),  # a repeat: not a row number
        ("user_id", [1, 1, 2, 3] * 15, "id"),  # named like one, even when repeated
        ("paid", [0.5, 1.5] * 30, "numeric"),
        ("code", [f"A{i}" for i in range(60)], "id"),  # unique strings without spaces
        ("city", ["Paris", "Oslo", "Rome"] * 20, "categorical"),
        ("when", [f"2024-01-{d:02d} 10:00" for d in range(1, 31)] * 2, "date"),
    ],
)
def test_roles_from_values_and_names(name: str, values: list[object], role: str) -> None:
    df = pd.DataFrame({name: values, "y": range(len(values))})
    [decision, _] = decide(df, "y", [], [])
    assert decision.role == role, decision


def test_mostly_numbers_only_for_numeric_text_but_for_blanks_and_a_few_others() -> None:
    numbers, others = mostly_numbers(pd.Series(["1.5", " ", "2"]))  # type: ignore[misc]
    assert numbers.tolist()[::2] == [1.5, 2.0] and others.empty
    assert mostly_numbers(pd.Series(["1.5", "n/a", "2"])) is None
    assert mostly_numbers(pd.Series([1.5, 2.0])) is None
    numbers, others = mostly_numbers(pd.Series([*map(str, range(95)), *["?"] * 5]))  # type: ignore[misc]
    assert numbers.isna().sum() == 5 and others.tolist() == ["?"] * 5
    assert mostly_numbers(pd.Series([*map(str, range(94)), *["?"] * 6])) is None
