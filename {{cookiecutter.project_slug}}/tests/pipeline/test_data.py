import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.pipeline.data import DataError, clean, load, prepare, split
from {{ cookiecutter.package_name }}.processed import NoProcessedDataError, read_split
from {{ cookiecutter.package_name }}.schema import Schema


@pytest.mark.parametrize(("name", "target"), [("breast_cancer", "target"), ("diabetes", "target")])
def test_loads_builtin_datasets(name: str, target: str) -> None:
    df = load(f"builtin:{name}")
    assert target in df.columns and len(df) > 400


def test_loads_csv_and_parquet(clf_frame: pd.DataFrame, tmp_path: Path) -> None:
    clf_frame.to_csv(tmp_path / "d.csv", index=False)
    clf_frame.to_parquet(tmp_path / "d.parquet")
    assert load(str(tmp_path / "d.csv")).shape == clf_frame.shape
    pd.testing.assert_frame_equal(load(str(tmp_path / "d.parquet")), clf_frame)


def test_loads_a_query_from_a_real_sqlite_database(clf_frame: pd.DataFrame, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "d.db") as connection:
        clf_frame.to_sql("customers", connection, index=False)
    df = load(f"sqlite:///{tmp_path / 'd.db'}", "SELECT * FROM customers WHERE visits > 2")
    assert len(df) == (clf_frame["visits"] > 2).sum()


@pytest.mark.parametrize(
    ("source", "query", "message"),
    [
        ("builtin:iris_flowers", None, "Unknown builtin dataset"),
        ("nowhere.csv", None, "does not exist"),
        ("sqlite:///x.db", None, "set data.query"),
        ("sqlite:///missing_dir/x.db", "SELECT 1", "no SQLite file 'missing_dir/x.db'"),
        ("sqlite:///x.db", "SELECT 1", "no SQLite file 'x.db'"),
    ],
)
def test_bad_sources_say_what_is_wrong(
    source: str, query: str | None, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=message):
        load(source, query)
    assert not (tmp_path / "x.db").exists()  # reading a source never creates it


@pytest.mark.parametrize("query", [None, "SELECT 1"])
def test_a_database_password_is_never_shown(query: str | None) -> None:
    """A real PostgreSQL driver that cannot connect: the message names the URL, masked."""
    url = "postgresql+psycopg://ml:s3cret-pw@127.0.0.1:1/data"

    with pytest.raises(DataError) as refused:
        load(url, query)

    assert "postgresql+psycopg://ml:***@127.0.0.1:1/data" in str(refused.value)
    assert "s3cret-pw" not in str(refused.value)


def test_empty_and_unsupported_files_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(DataError, match="is empty"):
        load(str(tmp_path / "empty.csv"))
    with pytest.raises(DataError, match=r"\.csv or \.parquet"):
        load(str(tmp_path / "data.json"))


def test_missing_target_column_is_named(clf_frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="'label' is not in the data; columns are: age"):
        clean(clf_frame, "label", "classification")


def test_rows_without_target_are_dropped_and_counted(
    clf_frame: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    clf_frame.loc[:4, "target"] = None
    cleaned = clean(clf_frame, "target", "classification")
    assert len(cleaned) == len(clf_frame) - 5
    assert "Dropped 5 rows" in caplog.text


def test_all_empty_column_is_named(clf_frame: pd.DataFrame) -> None:
    clf_frame["blank"] = np.nan
    with pytest.raises(DataError, match="blank"):
        clean(clf_frame, "target", "classification")


def test_single_class_target_is_rejected(clf_frame: pd.DataFrame) -> None:
    clf_frame["target"] = "yes"
    with pytest.raises(DataError, match="single class"):
        clean(clf_frame, "target", "classification")


def test_non_numeric_regression_target_is_rejected(clf_frame: pd.DataFrame) -> None:
    clf_frame["target"] = "a"
    with pytest.raises(DataError, match="not numeric"):
        clean(clf_frame, "target", "regression")


def test_categories_become_strings_but_missing_stays_missing(clf_frame: pd.DataFrame) -> None:
    clf_frame["flag"] = [True, False] * (len(clf_frame) // 2)
    cleaned = clean(clf_frame, "target", "classification")
    assert set(cleaned["flag"]) == {"True", "False"}
    assert cleaned["plan"].isna().sum() == clf_frame["plan"].isna().sum()


def test_split_is_stratified_for_classification(clf_frame: pd.DataFrame) -> None:
    parts = split(clf_frame, "target", "classification", 0.25, seed=0)
    assert len(parts.test) == 60
    share = parts.train["target"].value_counts(normalize=True)
    test_share = parts.test["target"].value_counts(normalize=True)
    assert abs(share["yes"] - test_share["yes"]) < 0.02


def test_prepare_writes_splits_reference_and_schema(settings: Settings) -> None:
    schema = prepare(settings)
    parts, loaded = read_split(settings.data.processed_dir)
    assert loaded == schema
    assert len(parts.train) + len(parts.test) == 240
    reference = pd.read_parquet(settings.data.processed_dir / "reference.parquet")
    assert set(schema.names) <= set(reference.columns)


def test_messy_csv_with_string_multiclass_target(tmp_path: Path, settings: Settings) -> None:
    """What real CSVs contain: NaNs, categories, integer codes, a string target, missing targets."""
    rng = np.random.default_rng(1)
    df = pd.DataFrame(
        {
            "size": rng.normal(size=90),
            "colour": rng.choice(["red", "green", None], 90),
            "grade": rng.integers(1, 4, 90),
            "species": rng.choice(["setosa", "versicolor", "virginica"], 90),
        }
    )
    df.loc[::9, "size"] = np.nan
    df.loc[::15, "species"] = None
    df.to_csv(tmp_path / "messy.csv", index=False)
    messy = settings.model_copy(
        update={
            "task": "classification",
            "data": settings.data.model_copy(
                update={"source": str(tmp_path / "messy.csv"), "target": "species"}
            ),
        }
    )
    schema = prepare(messy)
    assert schema.classes == ("setosa", "versicolor", "virginica")
    assert schema.categorical == ["colour"]
    assert isinstance(schema, Schema)


def test_read_split_before_prepare_says_what_to_run(settings: Settings) -> None:
    with pytest.raises(NoProcessedDataError, match="make data"):
        read_split(settings.data.processed_dir)


def test_a_semicolon_csv_is_read_by_its_separator(tmp_path: Path) -> None:
    path = tmp_path / "european.csv"
    path.write_text("size;colour;price\n1,5;red;10\n2,5;blue;12\n")
    assert list(load(str(path)).columns) == ["size", "colour", "price"]


def test_a_broken_csv_names_the_line_and_the_separator(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_text("a,b\n1,2\n3,4\n5,6,7\n8,9\n")
    with pytest.raises(DataError, match=r"broken.csv, line 4 .*set data.csv_sep") as raised:
        load(str(path), csv_sep=",")
    assert "\n" not in str(raised.value)


def test_a_continuous_target_suggests_regression(clf_frame: pd.DataFrame) -> None:
    clf_frame["target"] = np.linspace(0, 1, len(clf_frame))
    with pytest.raises(DataError, match=r"looks continuous .*did you mean `task: regression`") as e:
        clean(clf_frame, "target", "classification")
    assert len(str(e.value)) < 200


def test_many_integer_classes_suggest_regression(clf_frame: pd.DataFrame) -> None:
    clf_frame["target"] = np.arange(len(clf_frame)) % 60
    with pytest.raises(DataError, match="60 distinct whole numbers: if it is a quantity"):
        clean(clf_frame, "target", "classification")


def test_a_text_target_for_regression_suggests_classification(clf_frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="did you mean `task: classification`"):
        clean(clf_frame, "target", "regression")


def with_source(settings: Settings, path: Path) -> Settings:
    return settings.model_copy(
        update={"data": settings.data.model_copy(update={"source": str(path)})}
    )


def test_a_spreadsheet_export_with_decimal_commas_is_read_as_numbers(
    settings: Settings, frame: pd.DataFrame, tmp_path: Path
) -> None:
    """`;` between fields and `,` in numbers: what a French or German spreadsheet exports."""
    path = tmp_path / "export.csv"
    frame.to_csv(path, sep=";", decimal=",", index=False)

    schema = prepare(with_source(settings, path))

    assert schema.numeric == ["age", "visits", "score"]
    assert schema.categorical == ["plan"]


def test_a_few_non_numbers_in_a_number_column_are_named_and_read_as_missing(
    settings: Settings, frame: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "survey.csv"
    frame["age"] = frame["age"].astype(object)
    frame.loc[[1, 2, 3, 4, 5], "age"] = "?"
    frame.to_csv(path, index=False)

    schema = prepare(with_source(settings, path))

    assert "age" in schema.numeric
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "'age'" in warning and "5" in warning and "'?'" in warning


def test_a_latin_1_csv_is_told_as_an_encoding_problem(tmp_path: Path) -> None:
    path = tmp_path / "cities.csv"
    rows = "".join(f"Paris,{i}\n" for i in range(3000)) + "Besançon,1\n"
    path.write_bytes(("city,visits\n" + rows).encode("latin-1"))

    with pytest.raises(DataError, match=r"not utf-8 text \(byte 0xe7 .*data.csv_encoding") as e:
        load(str(path))
    assert "position" not in str(e.value) and "separator" not in str(e.value)
    assert load(str(path), csv_encoding="latin-1")["city"].iloc[-1] == "Besançon"
