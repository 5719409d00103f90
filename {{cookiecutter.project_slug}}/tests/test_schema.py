from pathlib import Path

import numpy as np
import pandas as pd

from {{ cookiecutter.package_name }}.schema import Schema


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


def test_frame_orders_columns_and_turns_none_into_nan(schema: Schema) -> None:
    df = schema.frame([{"plan": None, "score": 1.0, "visits": 2, "age": None}])
    assert list(df.columns) == schema.names
    assert df["age"].isna().all() and df["plan"].isna().all()
    assert df["plan"].iloc[0] is not None  # NaN, which sklearn's imputers recognise
