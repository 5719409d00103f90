"""Reading the raw data: a builtin dataset, a CSV or Parquet file, or a SQL query."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_breast_cancer, load_diabetes

from ..errors import UserError, mask_url, reason

BUILTIN = {"breast_cancer": load_breast_cancer, "diabetes": load_diabetes}
SNIFF_BYTES = 64 * 1024
SEPARATORS = ",;\t|"


class DataError(UserError):
    """The data cannot be used as it is; the message says which column or file and why."""


def load(source: str, query: str | None = None, csv_sep: str | None = None) -> pd.DataFrame:
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
        return _read_csv(path, csv_sep)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    raise DataError(f"Cannot read {path}: data.source must end in .csv or .parquet.")


def _read_csv(path: Path, sep: str | None) -> pd.DataFrame:
    """A CSV with its separator set in data.csv_sep or else detected (`;` is common in Europe)."""
    sep = sep or sniff_separator(path)
    try:
        return pd.read_csv(path, sep=sep)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"Data file {path} is empty.") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        line = re.search(r"line (\d+)", str(exc))
        where = f", line {line.group(1)}" if line else ""
        reason = str(exc).split(". ")[-1].strip().rstrip(".")
        raise DataError(
            f"Cannot parse {path}{where} with separator {sep!r}: {reason}. Check that line, or "
            "set data.csv_sep to the file's separator (e.g. ';' or '\\t')."
        ) from None


def sniff_separator(path: Path) -> str:
    """The separator of the file's first lines, or ',' when it cannot be told."""
    sample = path.read_bytes()[:SNIFF_BYTES].decode("utf-8", errors="replace")
    try:
        return csv.Sniffer().sniff(sample, delimiters=SEPARATORS).delimiter
    except csv.Error:
        return ","


def _read_sql(url: str, query: str | None) -> pd.DataFrame:
    import sqlalchemy as sa

    safe_url = mask_url(url)
    if not query:
        raise DataError(f"data.source is a database ({safe_url}): set data.query to a SELECT.")
    try:
        with sa.create_engine(url).connect() as connection:
            return pd.read_sql(sa.text(query), connection)
    except sa.exc.SQLAlchemyError as exc:
        raise DataError(f"Cannot read data.query from {safe_url}: {reason(exc)}") from exc
