"""Data stage: load -> validate -> split -> write parquet, the schema and a reference set."""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Collection
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.model_selection import train_test_split

from ..config import Settings
from ..errors import UserError, mask_url, reason
from ..processed import Split, write_processed
from ..schema import OtherColumn, Schema
from . import columns

log = logging.getLogger(__name__)
BUILTIN = {"breast_cancer": load_breast_cancer, "diabetes": load_diabetes}
SNIFF_BYTES = 64 * 1024
SEPARATORS = ",;\t|"
DECIMAL_COMMA = re.compile(r"-?\d*,\d+")  # a whole field such as 3,25 or -0,5
DECIMAL_POINT = re.compile(r"-?\d*\.\d+")
MIN_ROWS = 20
MAX_INTEGER_CLASSES = 30  # more integer "classes" than this look like a quantity
CONTINUOUS_MIN_DISTINCT = 20  # a numeric target with fractions and this many values is continuous


class DataError(UserError):
    """The data cannot be used as it is; the message says which column or file and why."""


def load(
    source: str,
    query: str | None = None,
    csv_sep: str | None = None,
    csv_decimal: str | None = None,
    csv_encoding: str = "utf-8",
) -> pd.DataFrame:
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
    if path.suffix == ".csv":
        return _read_csv(path, csv_sep, csv_decimal, csv_encoding)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    raise DataError(f"Cannot read {path}: data.source must end in .csv or .parquet.")


def _read_csv(path: Path, sep: str | None, decimal: str | None, encoding: str) -> pd.DataFrame:
    """A CSV read as config.yaml says (data.csv_*), or else as its first lines suggest."""
    try:
        sample = path.read_bytes()[:SNIFF_BYTES].decode(encoding, errors="replace")
    except LookupError:
        raise DataError(
            f"data.csv_encoding {encoding!r} is not an encoding Python knows."
        ) from None
    sep, decimal = sniff(sample, sep, decimal)
    try:
        return pd.read_csv(path, sep=sep, decimal=decimal, encoding=encoding)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"Data file {path} is empty.") from exc
    except UnicodeDecodeError as exc:  # its "position" counts bytes of a chunk: no help here
        raise DataError(
            f"{path} is not {encoding} text (byte {exc.object[exc.start]:#x} is not valid there): "
            "set data.csv_encoding to the file's encoding, e.g. cp1252 (Excel on Windows) or "
            "latin-1."
        ) from None
    except pd.errors.ParserError as exc:
        line = re.search(r"line (\d+)", str(exc))
        where = f", line {line.group(1)}" if line else ""
        cause = str(exc).split(". ")[-1].strip().rstrip(".")
        raise DataError(
            f"Cannot parse {path}{where} with separator {sep!r}: {cause}. Check that line, or "
            "set data.csv_sep to the file's separator (e.g. ';' or '\\t')."
        ) from None


def sniff(sample: str, sep: str | None = None, decimal: str | None = None) -> tuple[str, str]:
    """The separator and decimal mark of a CSV, from its first lines unless given: `;` and a
    decimal comma are how many European spreadsheets export. A comma is the decimal mark when
    it is not the separator and more fields are numbers written with it than with a point."""
    if sep is None:
        try:
            sep = csv.Sniffer().sniff(sample, delimiters=SEPARATORS).delimiter
        except csv.Error:
            sep = ","
    fields = [field.strip('" ') for line in sample.splitlines()[1:] for field in line.split(sep)]
    commas = sum(bool(DECIMAL_COMMA.fullmatch(field)) for field in fields)
    points = sum(bool(DECIMAL_POINT.fullmatch(field)) for field in fields)
    return sep, decimal or ("," if sep != "," and commas > points else ".")


def _read_sql(url: str, query: str | None) -> pd.DataFrame:
    import sqlalchemy as sa

    safe_url = mask_url(url)
    if not query:
        raise DataError(f"data.source is a database ({safe_url}): set data.query to a SELECT.")
    try:
        file = sa.make_url(url).database
        if url.startswith("sqlite") and not Path(file or "").is_file():  # connecting creates it
            raise DataError(f"data.source: no SQLite file {file!r} in {Path.cwd()}.")
        with sa.create_engine(url).connect() as connection:
            return pd.read_sql(sa.text(query), connection)
    except sa.exc.SQLAlchemyError as exc:
        raise DataError(f"Cannot read data.query from {safe_url}: {reason(exc)}") from exc


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
        df[column] = columns.numbers_or_text(df[column])
    if task == "regression" and not pd.api.types.is_numeric_dtype(df[target]):
        raise DataError(
            f"Target {target!r} is not numeric (e.g. {df[target].iloc[0]!r}): did you mean "
            "`task: classification`?"
        )
    if task == "classification":
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
    cfg, seed = settings.data, settings.random_state
    raw = load(cfg.source, cfg.query, cfg.csv_sep, cfg.csv_decimal, cfg.csv_encoding)
    df = clean(raw, cfg.target, settings.task, ignore=cfg.drop_columns)
    schema = infer_schema(df, settings)
    parts = split(df, cfg.target, settings.task, cfg.test_size, seed)
    reference = parts.train.sample(n=min(cfg.reference_rows, len(parts.train)), random_state=seed)
    write_processed(cfg.processed_dir, parts, reference, schema)
    log.info(
        "Data: %d rows, %d numeric and %d categorical features; train %d, test %d -> %s",
        *(len(df), len(schema.numeric), len(schema.categorical)),
        *(len(parts.train), len(parts.test), cfg.processed_dir),
    )
    return schema


def infer_schema(df: pd.DataFrame, settings: Settings) -> Schema:
    """The features and the other columns, with the decision for each in the log."""
    cfg = settings.data
    try:
        decisions = columns.decide(df, cfg.target, cfg.id_columns, cfg.drop_columns)
    except ValueError as exc:
        raise DataError(f"data.id_columns / data.drop_columns name columns {exc}.") from None
    width = max(len(d.name) for d in decisions)
    log.info(
        "Columns of %s (override in config.yaml: data.id_columns, data.drop_columns):\n%s",
        cfg.source,
        "\n".join(f"  {d.name:<{width}}  {d.role:<11}  {d.reason}" for d in decisions),
    )
    for decision in decisions:
        if decision.role == "text":
            log.warning("Column %r is %s: not used as a feature.", decision.name, decision.reason)
    others = tuple(
        OtherColumn(d.name, d.role, d.reason)
        for d in decisions
        if d.role not in ("numeric", "categorical", "target")
    )
    if len(others) + 1 == len(decisions):
        raise DataError("No column is left as a feature: check data.drop_columns and the log.")
    return Schema.infer(df, cfg.target, settings.task, others)
