"""Reading the prediction log: the queries of monitoring, compare and the demo.

A read-only engine: reading never creates a database, never writes and never needs the service.
Only live traffic is traffic: smoke checks are left out everywhere, and the challenger's shadow
scores only pair up with the champion's answers in `answers` (compare).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic_core import from_json
from sqlalchemy import Select, func, inspect, select
from sqlalchemy.exc import SQLAlchemyError

from ..errors import mask_url, reason
from .tables import LIVE, SHADOW, PredictionLogError, connect, feedback, predictions, sqlite_file

if TYPE_CHECKING:
    import pandas as pd

Key = tuple[str, int]  # (request id, row index)
SERVED = predictions.c


class Reader:
    def __init__(self, url: str) -> None:
        self.url = url

    def count(self) -> int:
        """Rows logged, every kind of traffic."""
        rows = self._rows(select(func.count()).select_from(predictions))
        return int(rows[0][0]) if rows else 0

    def latest(self, n: int) -> pd.DataFrame:
        """The latest `n` answers to live traffic, oldest first: created_at, model_version,
        prediction and one column per feature sent."""
        import pandas as pd

        query = select(SERVED.created_at, SERVED.model_version, SERVED.prediction, SERVED.features)
        rows = self._rows(query.where(SERVED.traffic == LIVE).order_by(SERVED.id.desc()).limit(n))
        features = pd.DataFrame.from_records([from_json(row.features) for row in rows[::-1]])
        return pd.concat([_frame(rows[::-1], "prediction"), features], axis=1)

    def labelled(self, n: int) -> pd.DataFrame:
        """The latest `n` live answers that have a true value, oldest first: created_at,
        model_version, prediction, actual."""
        labels = feedback.c
        same_row = (labels.request_id == SERVED.request_id) & (labels.row_index == SERVED.row_index)
        query = select(SERVED.created_at, SERVED.model_version, SERVED.prediction, labels.actual)
        query = query.join(feedback, same_row).where(SERVED.traffic == LIVE)
        rows = self._rows(query.order_by(SERVED.id.desc()).limit(n), feedback.name)
        return _frame(rows[::-1], "prediction", "actual")

    def answers(self, versions: set[str]) -> dict[str, dict[Key, Any]]:
        """Each version's answers (live or shadow) by (request id, row index)."""
        query = select(SERVED.request_id, SERVED.row_index, SERVED.model_version, SERVED.prediction)
        query = query.where(SERVED.model_version.in_(versions), SERVED.traffic.in_([LIVE, SHADOW]))
        found: dict[str, dict[Key, Any]] = {}
        for request_id, index, version, prediction in self._rows(query):
            found.setdefault(version, {})[(request_id, index)] = from_json(prediction)
        return found

    def labels(self) -> dict[Key, Any]:
        """True values sent to POST /feedback, by (request id, row index)."""
        query = select(feedback.c.request_id, feedback.c.row_index, feedback.c.actual)
        return {(r, int(i)): from_json(a) for r, i, a in self._rows(query, feedback.name)}

    def _rows(self, query: Select[Any], *tables: str) -> list[Any]:
        """The rows of `query`; none while the log or a table it reads does not exist yet."""
        file = sqlite_file(self.url)
        if file and not file.is_file():
            return []  # opening it would create it
        try:
            engine = connect(self.url, read_only=True)
            try:
                if not all(inspect(engine).has_table(t) for t in {predictions.name, *tables}):
                    return []
                with engine.connect() as conn:
                    return list(conn.execute(query))
            finally:
                engine.dispose()
        except (SQLAlchemyError, ImportError) as exc:
            raise PredictionLogError(
                f"Cannot read the prediction log {mask_url(self.url)} (prediction_log.url): "
                f"{reason(exc)}"
            ) from exc


def _frame(rows: list[Any], *json_columns: str) -> pd.DataFrame:
    """created_at in UTC, model_version, and the JSON columns decoded."""
    import pandas as pd

    frame = pd.DataFrame({"created_at": pd.to_datetime([r.created_at for r in rows], utc=True)})
    frame["model_version"] = pd.Series([r.model_version for r in rows], dtype=object)
    for name in json_columns:
        frame[name] = pd.Series([from_json(getattr(r, name)) for r in rows], dtype=object)
    return frame
