"""Ground truth: the true value of a logged prediction, sent later by whoever learns it.

Stored in the `feedback` table, keyed like the predictions: (request_id, row_index). The first
label of a row stands: the same label sent again is a duplicate, a different one a conflict;
neither changes what is stored, so a client may resend a whole batch after a timeout without
double-counting anything.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic_core import from_json
from sqlalchemy import Connection, Engine, func, select, tuple_

from ..schema import Schema
from .reader import Key
from .tables import feedback, insert_new, predictions


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

    def repeat(self, item: dict[str, Any], actual: Any, first: Any) -> None:
        """A label for a row that has one: a duplicate, or a conflict (the first one stays)."""
        if actual == first:
            self.duplicates += 1
        else:
            self.conflicts.append({**item, "reason": f"already labelled {first!r}; kept"})


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
        if (label.request_id, label.index) in valid:
            result.repeat(item, actual, valid[(label.request_id, label.index)])
        else:
            valid[(label.request_id, label.index)] = actual
    with engine.begin() as conn:  # the writer created the tables at its start
        rows, stored = _known(conn, {(r, 0 if i is None else i) for r, i in valid})
        new, received = [], datetime.now(UTC)
        for (request_id, index), actual in valid.items():
            item, count = {"request_id": request_id, "index": index}, rows.get(request_id, 0)
            key = (request_id, 0 if index is None else index)
            if index is None and count > 1:
                reason = f"index is required: that request had {count} rows"
                result.invalid.append({**item, "reason": reason})
            elif not count:
                result.unknown.append({**item, "reason": "no prediction logged with it (yet)"})
            elif key[1] >= count:
                result.unknown.append({**item, "reason": f"that request had {count} row(s)"})
            elif key in stored:
                result.repeat(item, actual, stored[key])
            else:
                stored[key] = actual
                row = {"request_id": request_id, "row_index": key[1], "actual": json.dumps(actual)}
                new.append({**row, "received_at": received})
        if new:
            conn.execute(insert_new(feedback, engine.dialect.name), new)
            result.accepted = len(new)
    return result


def _known(conn: Connection, keys: set[Key]) -> tuple[dict[str, int], dict[Key, Any]]:
    """How many rows each request of `keys` logged (those not logged are absent), and the labels
    stored already for `keys`."""
    served, labels = predictions.c, feedback.c
    logged = select(served.request_id, func.max(served.row_index) + 1).group_by(served.request_id)
    logged = logged.where(served.request_id.in_({request_id for request_id, _ in keys}))
    stored = select(labels.request_id, labels.row_index, labels.actual)
    stored = stored.where(tuple_(labels.request_id, labels.row_index).in_(keys))
    return (
        {request_id: int(count) for request_id, count in conn.execute(logged)},
        {(r, i): from_json(a) for r, i, a in conn.execute(stored)},
    )
