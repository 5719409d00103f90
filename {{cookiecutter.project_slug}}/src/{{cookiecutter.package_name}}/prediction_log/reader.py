"""Reading the prediction log: the queries of monitoring, compare and the demo.

A read-only engine: reading never creates a database, never writes and never needs the service.
Only live traffic is traffic: smoke checks are left out everywhere, and the challenger's shadow
scores only pair up with the champion's answers in `answers` (compare).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic_core import from_json
from sqlalchemy import Engine, Select, func, inspect, select
from sqlalchemy.exc import SQLAlchemyError

from ..errors import mask_url, reason
from .tables import LIVE, SHADOW, PredictionLogError, connect, feedback, predictions, sqlite_file

if TYPE_CHECKING:
    import pandas as pd

Key = tuple[str, int]  # (request id, row index)


class Reader:
    def __init__(self, url: str) -> None:
        self.url, self.safe_url = url, mask_url(url)
        self._engine: Engine | None = None

    def count(self) -> int:
        """Rows logged, every kind of traffic."""
        rows = self._rows(select(func.count()).select_from(predictions))
        return int(rows[0][0]) if rows else 0

    def latest(self, n: int) -> pd.DataFrame:
        """The latest `n` answers to live traffic, oldest first: created_at, model_version,
        prediction and one column per feature sent."""
        import pandas as pd

        columns = predictions.c
        query = select(columns.created_at, columns.model_version, columns.prediction,
                       columns.features).where(columns.traffic == LIVE)  # fmt: skip
        rows = self._rows(query.order_by(columns.id.desc()).limit(n))[::-1]
        frame = _frame(rows, ["created_at", "model_version", "prediction"])
        features = pd.DataFrame.from_records([from_json(row.features) for row in rows])
        return pd.concat([frame, features], axis=1)

    def labelled(self, n: int) -> pd.DataFrame:
        """The latest `n` live answers that have a true value, oldest first: created_at,
        model_version, prediction, actual."""
        columns = predictions.c
        joined = predictions.join(feedback, (feedback.c.request_id == columns.request_id)
                                  & (feedback.c.row_index == columns.row_index))  # fmt: skip
        query = (
            select(columns.created_at, columns.model_version, columns.prediction, feedback.c.actual)
            .select_from(joined)
            .where(columns.traffic == LIVE)
            .order_by(columns.id.desc())
            .limit(n)
        )
        rows = self._rows(query, feedback.name)[::-1]
        return _frame(rows, ["created_at", "model_version", "prediction", "actual"])

    def answers(self, versions: set[str]) -> dict[str, dict[Key, Any]]:
        """Each version's answers (live or shadow) by (request id, row index)."""
        columns = predictions.c
        query = select(columns.request_id, columns.row_index, columns.model_version,
                       columns.prediction).where(columns.model_version.in_(versions),
                                                 columns.traffic.in_([LIVE, SHADOW]))  # fmt: skip
        found: dict[str, dict[Key, Any]] = {}
        for request_id, index, version, prediction in self._rows(query):
            found.setdefault(version, {})[(request_id, index)] = from_json(prediction)
        return found

    def labels(self) -> dict[Key, Any]:
        """True values sent to POST /feedback, by (request id, row index)."""
        query = select(feedback.c.request_id, feedback.c.row_index, feedback.c.actual)
        return {(r, int(i)): from_json(a) for r, i, a in self._rows(query, feedback.name)}

    def _rows(self, query: Select[Any], *tables: str) -> list[Any]:
        """The rows of `query`; none while the log or a table it reads does not exist yet;
        PredictionLogError with the reason when the log cannot be read."""
        file = sqlite_file(self.url)
        if file and not file.is_file():
            return []  # opening it would create it
        try:
            engine = self._engine = self._engine or connect(self.url, read_only=True)
            if not all(inspect(engine).has_table(name) for name in {predictions.name, *tables}):
                return []
            with engine.connect() as conn:
                return list(conn.execute(query))
        except (SQLAlchemyError, ImportError) as exc:
            raise PredictionLogError(
                f"Cannot read the prediction log {self.safe_url} (prediction_log.url): "
                f"{reason(exc)}"
            ) from exc


def _frame(rows: list[Any], names: list[str]) -> pd.DataFrame:
    """Rows as a frame: timestamps in UTC, JSON values decoded."""
    import pandas as pd

    data = {
        name: pd.to_datetime([row.created_at for row in rows], utc=True)
        if name == "created_at"
        else pd.Series([_value(getattr(row, name), name) for row in rows], dtype=object)
        for name in names
    }
    return pd.DataFrame(data)


def _value(value: Any, name: str) -> Any:
    return from_json(value) if name in ("prediction", "actual") else value
