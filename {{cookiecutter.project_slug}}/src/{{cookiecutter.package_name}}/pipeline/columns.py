"""Which columns are features, and why: decided once by `make data`, overridable in config.yaml.

An ID is not a feature (a model would memorise it), nor is a date kept as text (every day would
be a new category), nor free text (thousands of one-off categories). Those columns stay in the
data and the API accepts them, so a client may send whole rows; the model never sees them.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass

import pandas as pd

log = logging.getLogger(__name__)
# Named like an identifier: id, ID, customer_id, order-uuid, customerID, userId; not paid, valid.
ID_WORD = re.compile(r"(^|[_\s.-])(id|uuid|guid)$|^(id|uuid|guid)([_\s.-]|$)", re.IGNORECASE)
ID_CAMEL = re.compile(r"[a-z](ID|Id|UUID|Uuid)$")
TEXT_MIN_DISTINCT = 50  # free text: at least this many distinct values ...
TEXT_DISTINCT_SHARE = 0.5  # ... making up at least this share of the rows
DATE_SHARE = 0.95  # a text column is a date when this share of a sample parses as dates
DATE_SAMPLE = 200
NUMBERS_SHARE = 0.95  # text that is numbers in this share of its values is a numeric column


@dataclass(frozen=True)
class Decision:
    name: str
    role: str  # numeric | categorical | id | date | text | dropped | target
    reason: str


def mostly_numbers(column: pd.Series) -> tuple[pd.Series, pd.Series] | None:
    """A text column whose non-blank values are numbers but for at most 5% ("?", "n/a"): the
    numbers with the rest missing, and the rest; None for any other column. Blanks (" " in an
    exported amount column) are missing numbers too."""
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return None
    text = column.astype("string").str.strip()
    filled = text.notna() & text.ne("")
    numbers = pd.to_numeric(text.where(filled), errors="coerce").astype(float)
    others = column[filled & numbers.isna()]
    if not filled.any() or len(others) > (1 - NUMBERS_SHARE) * filled.sum():
        return None
    return numbers, others


def numbers_or_text(column: pd.Series) -> pd.Series:
    """Numbers stay numbers; text that is numbers but for blanks and a few other values ("?")
    becomes numbers with those missing; anything else is a category, as text everywhere (data,
    API, monitoring): True -> "True", 3 -> "3"."""
    found = mostly_numbers(column)
    if found is not None:
        numbers, others = found
        if others.empty:
            blanks = int(numbers.isna().sum() - column.isna().sum())
            log.info("Column %r: numbers, %d blank value(s) read as missing.", column.name, blanks)
        else:
            log.warning(
                "Column %r: numbers but for %d value(s), read as missing: %s. Fix them in the "
                "data if they mean something.",
                *(column.name, len(others), ", ".join(map(repr, others.unique()[:5]))),
            )
        return numbers
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column
    return column.where(column.isna(), column.astype(str))


def decide(
    df: pd.DataFrame, target: str, id_columns: list[str], drop_columns: list[str]
) -> list[Decision]:
    """One decision per column, in the data's order."""
    unknown = sorted(set(id_columns + drop_columns) - set(df.columns))
    if unknown:
        raise ValueError(f"not in the data: {', '.join(unknown)}")
    return [_decide(df[name], target, id_columns, drop_columns) for name in df.columns]


def _decide(column: pd.Series, target: str, ids: list[str], dropped: list[str]) -> Decision:
    name = str(column.name)
    if name == target:
        return Decision(name, "target", "data.target")
    if name in dropped:
        return Decision(name, "dropped", "listed in data.drop_columns")
    if name in ids:
        return Decision(name, "id", "listed in data.id_columns")
    if ID_WORD.search(name) or ID_CAMEL.search(name):
        return Decision(name, "id", "named like an identifier")
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return Decision(name, *_numeric_role(column.dropna()))
    return Decision(name, *_text_role(column.dropna().astype(str)))


def _numeric_role(values: pd.Series) -> tuple[str, str]:
    consecutive = len(values) > 1 and values.max() - values.min() + 1 == len(values)
    if pd.api.types.is_integer_dtype(values) and consecutive and values.is_unique:
        return "id", "a row number: every value once, consecutive"
    if values.empty:
        return "numeric", "numbers"
    return "numeric", f"numbers, {values.min():g} to {values.max():g}"


def _text_role(values: pd.Series) -> tuple[str, str]:
    distinct = values.nunique()
    if _looks_like_dates(values):
        return "date", "dates: not a feature as text (add date parts yourself)"
    one_word = not values.str.contains(r"\s").any()
    if len(values) >= TEXT_MIN_DISTINCT and values.is_unique and one_word:
        return "id", "a different value on every row"
    if distinct >= TEXT_MIN_DISTINCT and distinct >= TEXT_DISTINCT_SHARE * len(values):
        return "text", f"free text: {distinct} distinct values in {len(values)} rows"
    return "categorical", f"{distinct} categories"


def _looks_like_dates(text: pd.Series) -> bool:
    sample = text.head(DATE_SAMPLE)
    if sample.empty or not sample.str.contains(r"\d[-/.:]\d").all():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() >= DATE_SHARE)
