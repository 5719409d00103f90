"""Data stage: load -> validate -> split -> write parquet, the schema and a reference set."""

from __future__ import annotations

import logging
from collections.abc import Collection

import pandas as pd
from sklearn.model_selection import train_test_split

from ..config import Settings
from ..processed import Split, write_processed
from ..schema import OtherColumn, Schema
from . import columns
from .sources import DataError, load

log = logging.getLogger(__name__)
MIN_ROWS = 20
MAX_INTEGER_CLASSES = 30  # more integer "classes" than this look like a quantity
CONTINUOUS_MIN_DISTINCT = 20  # a numeric target with fractions and this many values is continuous


def clean(df: pd.DataFrame, target: str, task: str, ignore: Collection[str] = ()) -> pd.DataFrame:
    """Validate `df` for training and drop rows without a target; DataError names the problem.
    Columns in `ignore` (data.drop_columns) are kept but not checked."""
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
    empty = [c for c in df.columns if c not in {target, *ignore} and df[c].isna().all()]
    if empty:
        raise DataError(
            f"Column(s) {', '.join(empty)} have no values at all: list them in "
            "data.drop_columns in config.yaml."
        )
    if len(df) < MIN_ROWS:
        raise DataError(f"Only {len(df)} rows with a target: at least {MIN_ROWS} are needed.")
    for column in df.columns.drop(target):
        numbers = columns.numbers_with_blanks(df[column])
        if numbers is not None:  # " " in an exported amount column is a missing number
            blanks = int(numbers.isna().sum() - df[column].isna().sum())
            log.info("Column %r: numbers, %d blank value(s) read as missing.", column, blanks)
            df[column] = numbers
        elif pd.api.types.is_bool_dtype(df[column]) or not pd.api.types.is_numeric_dtype(
            df[column]
        ):
            # Categories are strings everywhere (data, API, monitoring): True -> "True", 3 -> "3".
            df[column] = df[column].where(df[column].isna(), df[column].astype(str))
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(df[target]):
            raise DataError(
                f"Target {target!r} is not numeric (e.g. {df[target].iloc[0]!r}): did you mean "
                "`task: classification`?"
            )
    else:
        _check_classes(df[target], target)
    return df


def _check_classes(y: pd.Series, target: str) -> None:
    counts = y.value_counts()
    if len(counts) < 2:
        raise DataError(
            f"Target {target!r} has a single class ({counts.index[0]!r}): nothing to learn."
        )
    if pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y):
        fractional = bool((y != y.round()).any())
        if fractional and len(counts) >= CONTINUOUS_MIN_DISTINCT:
            raise DataError(
                f"Target {target!r} looks continuous ({len(counts)} distinct values such as "
                f"{float(y.iloc[0]):g}): did you mean `task: regression`?"
            )
        if len(counts) > MAX_INTEGER_CLASSES:
            raise DataError(
                f"Target {target!r} has {len(counts)} distinct whole numbers: if it is a quantity, "
                "set `task: regression`; a classifier would need a class for each."
            )
    rare = counts[counts < 2]
    if not rare.empty:
        shown = ", ".join(map(str, rare.index[:5])) + (" ..." if len(rare) > 5 else "")
        raise DataError(
            f"Target {target!r} has {len(rare)} class(es) with a single row ({shown}): a "
            "stratified split needs at least 2 rows per class."
        )


def split(df: pd.DataFrame, target: str, task: str, test_size: float, seed: int) -> Split:
    """Hold out `test_size` of the rows, stratified by class for classification."""
    stratify = df[target] if task == "classification" else None
    train, test = train_test_split(df, test_size=test_size, random_state=seed, stratify=stratify)
    return Split(train.reset_index(drop=True), test.reset_index(drop=True))


def prepare(settings: Settings) -> Schema:
    """The `data` stage: decide the columns' roles, write train/test/reference parquet and
    schema.json."""
    cfg = settings.data
    raw = load(cfg.source, cfg.query, cfg.csv_sep)
    df = clean(raw, cfg.target, settings.task, ignore=cfg.drop_columns)
    schema = infer_schema(df, settings)
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


def infer_schema(df: pd.DataFrame, settings: Settings) -> Schema:
    """The features and the other columns, with the decision for each in the log."""
    cfg = settings.data
    try:
        decisions = columns.decide(df, cfg.target, cfg.id_columns, cfg.drop_columns)
    except ValueError as exc:
        raise DataError(f"data.id_columns / data.drop_columns name columns {exc}.") from None
    log.info(
        "Columns of %s (override in config.yaml: data.id_columns, data.drop_columns):\n%s",
        cfg.source,
        columns.table(decisions),
    )
    for decision in decisions:
        if decision.role == "text":
            log.warning("Column %r is %s: not used as a feature.", decision.name, decision.reason)
    others = tuple(
        OtherColumn(d.name, d.role, d.reason)
        for d in decisions
        if not d.is_feature and d.role != "target"
    )
    if len(others) + 1 == len(decisions):
        raise DataError("No column is left as a feature: check data.drop_columns and the log.")
    return Schema.infer(df, cfg.target, settings.task, others)
