import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package_name }}.schema import MISSING_CATEGORY, Schema, category_text


def test_infers_kinds_types_ranges_and_nullability(clf_frame: pd.DataFrame) -> None:
    schema = Schema.infer(clf_frame, "target", "classification")
    by_name = {f.name: f for f in schema.features}
    assert schema.names == ["age", "visits", "plan", "score"]
    assert by_name["age"].kind == "numeric" and by_name["age"].dtype == "float"
    assert by_name["age"].nullable
    assert by_name["visits"].dtype == "integer" and not by_name["visits"].nullable
    assert by_name["visits"].minimum == clf_frame["visits"].min()
    assert by_name["plan"].kind == "categorical"
    assert by_name["plan"].categories == ("basic", "plus", "pro")
    assert schema.classes == ("no", "yes")


def test_regression_has_no_classes(clf_frame: pd.DataFrame) -> None:
    clf_frame["target"] = np.arange(len(clf_frame), dtype=float)
    assert Schema.infer(clf_frame, "target", "regression").classes == ()


def test_round_trips_through_json(clf_frame: pd.DataFrame, tmp_path: Path) -> None:
    schema = Schema.infer(clf_frame, "target", "classification")
    schema.save(tmp_path / "schema.json")
    assert Schema.load(tmp_path / "schema.json") == schema


def test_frame_orders_columns_and_fills_missing_values(schema: Schema) -> None:
    df = schema.frame([{"plan": None, "score": 1.0, "visits": 2, "age": None}])
    assert list(df.columns) == schema.names
    assert df["age"].isna().all()
    assert df["plan"].tolist() == [MISSING_CATEGORY]  # text: what the encoder and ONNX read


def test_model_input_prepares_a_frame_as_frame_prepares_request_rows(
    schema: Schema, frame: pd.DataFrame
) -> None:
    rows = json.loads(frame[schema.names].to_json(orient="records"))

    from_rows, from_frame = schema.frame(rows), schema.model_input(frame)

    pd.testing.assert_frame_equal(from_frame, from_rows, check_dtype=False)
    assert (from_frame["plan"] == MISSING_CATEGORY).sum() == frame["plan"].isna().sum() > 0


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, MISSING_CATEGORY), (float("nan"), MISSING_CATEGORY), ("pro", "pro"), (3, "3")],
)
def test_category_text(value: object, text: str) -> None:
    assert category_text(value) == text
