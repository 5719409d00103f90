"""Ground truth: the true value of a logged prediction, sent later by whoever learns it.

Kept in the prediction log's database, in a `feedback` table keyed like the predictions:
(request_id, row_index). The first label of a row stands: the same label sent again is a
duplicate, a different one a conflict; neither changes what is stored, so a client may resend a
whole batch after a timeout without double-counting anything.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic_core import from_json
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    insert,
    inspect,
    select,
    tuple_,
)
from sqlalchemy.exc import SQLAlchemyError

from .schema import Schema
from .store import predictions

if TYPE_CHECKING:  # only monitoring reads labelled rows into a frame
    import pandas as pd

metadata = MetaData()
feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("request_id", Text, nullable=False),
    Column("row_index", Integer, nullable=False),
    Column("actual", Text, nullable=False),  # JSON value: a class or a number
    UniqueConstraint("request_id", "row_index", name="feedback_row"),
)


@dataclass(frozen=True)
class Label:
    """One item of a POST /feedback body; `index` None means "the request's only row"."""

    request_id: str
    index: int | None
    actual: Any


@dataclass
class FeedbackResult:
    """What happened to each item: counts for the stored ones, the others listed with why."""

    accepted: int = 0
    duplicates: int = 0
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    unknown: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[dict[str, Any]] = field(default_factory=list)


def check_actual(value: Any, schema: Schema) -> Any:
    """The label as the model's answers spell it; ValueError says why it cannot be one."""
    if schema.task == "regression":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"actual must be a number, not {value!r:.40}")
        if not math.isfinite(value):
            raise ValueError("actual must be a finite number")
        return float(value)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"actual must be one of the classes, not {value!r:.40}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    classes = {str(c): c for c in schema.classes}
    if str(value) not in classes:
        listed = ", ".join(map(str, schema.classes))
        raise ValueError(f"actual {value!r:.40} is not a class of the model ({listed:.200})")
    return classes[str(value)]


def record(engine: Engine, labels: list[Label], schema: Schema) -> FeedbackResult:
    """Validate `labels`, match them to logged predictions and store the new ones."""
    result = FeedbackResult()
    valid: dict[tuple[str, int | None], Any] = {}
    for label in labels:
        item = {"request_id": label.request_id, "index": label.index}
        try:
            actual = check_actual(label.actual, schema)
        except ValueError as exc:
            result.invalid.append({**item, "reason": str(exc)})
            continue
        key = (label.request_id, label.index)
        if key in valid:
            _repeat(result, item, actual, valid[key])
        else:
            valid[key] = actual
    _create_table(engine)
    with engine.begin() as conn:
        rows = _logged_rows(conn, {request_id for request_id, _ in valid})
        stored = _stored(conn, list(valid))
        new = []
        for (request_id, index), actual in valid.items():
            item = {"request_id": request_id, "index": index}
            count = rows.get(request_id, 0)
            if index is None and count > 1:
                result.invalid.append(
                    {**item, "reason": f"index is required: that request had {count} rows"}
                )
                continue
            row_index = 0 if index is None else index
            if not count:
                result.unknown.append({**item, "reason": "no prediction logged with it (yet)"})
            elif row_index >= count:
                result.unknown.append({**item, "reason": f"that request had {count} row(s)"})
            elif (request_id, row_index) in stored:
                _repeat(result, item, actual, stored[(request_id, row_index)])
            else:
                stored[(request_id, row_index)] = actual
                new.append(_row(request_id, row_index, actual))
        if new:
            conn.execute(_insert_ignoring_duplicates(engine), new)
            result.accepted = len(new)
    return result


def read_labelled(engine: Engine, n: int) -> pd.DataFrame:
    """The latest `n` logged predictions that have a label, oldest first: created_at,
    model_version, prediction, actual."""
    import pandas as pd

    rows: list[Any] = []
    if inspect(engine).has_table(feedback.name):
        query = (
            select(
                predictions.c.created_at,
                predictions.c.model_version,
                predictions.c.prediction,
                feedback.c.actual,
            )
            .join(
                feedback,
                (feedback.c.request_id == predictions.c.request_id)
                & (feedback.c.row_index == predictions.c.row_index),
            )
            .order_by(predictions.c.id.desc())
            .limit(n)
        )
        with engine.connect() as conn:
            rows = list(conn.execute(query))[::-1]
    return pd.DataFrame(
        {
            "created_at": pd.to_datetime([r.created_at for r in rows], utc=True),
            "model_version": pd.Series([r.model_version for r in rows], dtype=object),
            "prediction": pd.Series([from_json(r.prediction) for r in rows], dtype=object),
            "actual": pd.Series([from_json(r.actual) for r in rows], dtype=object),
        }
    )


def _create_table(engine: Engine) -> None:
    """CREATE TABLE unless it exists; two workers may race to create it, which is fine."""
    try:
        metadata.create_all(engine)
    except SQLAlchemyError:
        if not inspect(engine).has_table(feedback.name):
            raise


def _repeat(result: FeedbackResult, item: dict[str, Any], actual: Any, first: Any) -> None:
    if actual == first:
        result.duplicates += 1
    else:
        result.conflicts.append({**item, "reason": f"already labelled {first!r}; kept"})


def _logged_rows(conn: Any, request_ids: set[str]) -> dict[str, int]:
    """How many rows each of these requests logged (requests not logged are absent)."""
    if not request_ids:
        return {}
    query = select(predictions.c.request_id, predictions.c.row_index).where(
        predictions.c.request_id.in_(request_ids)
    )
    counts: dict[str, int] = {}
    for request_id, row_index in conn.execute(query):
        counts[request_id] = max(counts.get(request_id, 0), row_index + 1)
    return counts


def _stored(conn: Any, keys: list[tuple[str, int | None]]) -> dict[tuple[str, int], Any]:
    """Labels already stored for these rows (a missing index is row 0)."""
    wanted = {(r, 0 if i is None else i) for r, i in keys}
    if not wanted:
        return {}
    query = select(feedback.c.request_id, feedback.c.row_index, feedback.c.actual).where(
        tuple_(feedback.c.request_id, feedback.c.row_index).in_(wanted)
    )
    return {(r, i): from_json(a) for r, i, a in conn.execute(query)}


def _row(request_id: str, row_index: int, actual: Any) -> dict[str, Any]:
    return {
        "received_at": datetime.now(UTC),
        "request_id": request_id,
        "row_index": row_index,
        "actual": json.dumps(actual),
    }


def _insert_ignoring_duplicates(engine: Engine) -> Any:
    """INSERT that skips a row another process stored a moment ago (the unique key)."""
    keys = ["request_id", "row_index"]
    if engine.dialect.name == "sqlite":  # each dialect imported when used, as in store.py
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(feedback).on_conflict_do_nothing(index_elements=keys)
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(feedback).on_conflict_do_nothing(index_elements=keys)
    return insert(feedback)
