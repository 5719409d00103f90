"""Data stage: load -> validate -> split -> write parquet, the schema and a reference set."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.model_selection import train_test_split

from ..config import Settings
from ..errors import UserError
from ..schema import Schema
from .processed import Split, write_processed

log = logging.getLogger(__name__)
BUILTIN = {"breast_cancer": load_breast_cancer, "diabetes": load_diabetes}
MIN_ROWS = 20


class DataError(UserError):
    """The data cannot be used as it is; the message says which column or file and why."""


def load(source: str, query: str | None = None) -> pd.DataFrame:
    """Read `source`: builtin:<name>, a .csv/.parquet path, or a SQLAlchemy URL with `query`."""
    if source.startswith("builtin:"):
        name = source.removeprefix("builtin:")
        if name not in BUILTIN:
            raise DataError(f"Unknown builtin dataset {name!r}: use one of {sorted(BUILTIN)}.")
        frame: pd.DataFrame = BUILTIN[name](as_frame=True).frame
        return frame
    if "://" in source:
        return _read_sql(source, query)
    path = Path(source)
    if not path.is_file():
        raise DataError(f"Data file {path} does not exist: check data.source in config.yaml.")
    try:
        if path.suffix == ".csv":
            return pd.read_csv(path)
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"Data file {path} is empty.") from exc
    raise DataError(f"Cannot read {path}: data.source must end in .csv or .parquet.")


def _read_sql(url: str, query: str | None) -> pd.DataFrame:
    import sqlalchemy as sa

    if not query:
        raise DataError(f"data.source is a database ({url}): set data.query to a SELECT.")
    try:
        with sa.create_engine(url).connect() as connection:
            return pd.read_sql(sa.text(query), connection)
    except sa.exc.SQLAlchemyError as exc:
        raise DataError(
            f"Cannot read data.query from {url}: {exc.__class__.__name__}: {exc}"
        ) from exc


def clean(df: pd.DataFrame, target: str, task: str) -> pd.DataFrame:
    """Validate `df` for training and drop rows without a target; DataError names the problem."""
    df = df.rename(columns=str)
    if df.empty:
        raise DataError("The data has no rows.")
    if target not in df.columns:
        raise DataError(
            f"Target column {target!r} is not in the data; columns are: {', '.join(df.columns)}. "
            "Set data.target in config.yaml."
        )
    missing_target = int(df[target].isna().sum())
    if missing_target:
        log.warning("Dropped %d rows with a missing target %r.", missing_target, target)
        df = df.dropna(subset=[target]).reset_index(drop=True)
    empty = [c for c in df.columns if c != target and df[c].isna().all()]
    if empty:
        raise DataError(f"Column(s) {', '.join(empty)} have no values at all: drop them.")
    if len(df) < MIN_ROWS:
        raise DataError(f"Only {len(df)} rows with a target: at least {MIN_ROWS} are needed.")
    for column in df.columns.drop(target):
        if pd.api.types.is_bool_dtype(df[column]) or not pd.api.types.is_numeric_dtype(df[column]):
            # Categories are strings everywhere (data, API, monitoring): True -> "True", 3 -> "3".
            df[column] = df[column].where(df[column].isna(), df[column].astype(str))
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(df[target]):
            raise DataError(f"Target {target!r} is not numeric: set task: classification?")
    else:
        _check_classes(df[target], target)
    return df


def _check_classes(y: pd.Series, target: str) -> None:
    counts = y.value_counts()
    if len(counts) < 2:
        raise DataError(
            f"Target {target!r} has a single class ({counts.index[0]!r}): nothing to learn."
        )
    rare = counts[counts < 2]
    if not rare.empty:
        raise DataError(
            f"Target {target!r} has classes with a single row ({', '.join(map(str, rare.index))}): "
            "a stratified split needs at least 2 rows per class."
        )


def split(df: pd.DataFrame, target: str, task: str, test_size: float, seed: int) -> Split:
    """Hold out `test_size` of the rows, stratified by class for classification."""
    stratify = df[target] if task == "classification" else None
    train, test = train_test_split(df, test_size=test_size, random_state=seed, stratify=stratify)
    return Split(train.reset_index(drop=True), test.reset_index(drop=True))


def prepare(settings: Settings) -> Schema:
    """The `data` stage: write train/test/reference parquet and schema.json."""
    cfg = settings.data
    df = clean(load(cfg.source, cfg.query), cfg.target, settings.task)
    schema = Schema.infer(df, cfg.target, settings.task)
    parts = split(df, cfg.target, settings.task, cfg.test_size, settings.random_state)
    reference = parts.train.sample(
        n=min(cfg.reference_rows, len(parts.train)), random_state=settings.random_state
    )
    write_processed(cfg.processed_dir, parts, reference, schema)
    log.info(
        "Data: %d rows, %d numeric and %d categorical features; train %d, test %d -> %s",
        len(df),
        len(schema.numeric),
        len(schema.categorical),
        len(parts.train),
        len(parts.test),
        cfg.processed_dir,
    )
    return schema
