"""The prediction log's tables, defined once, the row the service hands over, and the engine.

    predictions   one row per scored row, with the model that answered and its traffic: live,
                  smoke (a `make smoke` check) or shadow (the challenger scoring a request the
                  champion answered). Drift, quality and compare count live traffic only.
    feedback      the true value of a logged row, sent later to POST /feedback.

SQLite (the default) runs in WAL mode with a busy timeout, so several workers and a monitoring job
use one file at once; any other SQLAlchemy URL (PostgreSQL) works too.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic_core import to_json
from sqlalchemy.dialects import postgresql, sqlite

from ..errors import UserError, reason

SQLITE_BUSY_TIMEOUT_MS = 30_000
LIVE, SMOKE, SHADOW = "live", "smoke", "shadow"  # the traffic a row was
Row = dict[str, Any]

metadata = sa.MetaData()
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("request_id", sa.Text, nullable=False),
    sa.Column("row_index", sa.Integer, nullable=False),  # the row's position in its request
    sa.Column("model_role", sa.Text, nullable=False, server_default="champion"),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("features", sa.Text, nullable=False),  # JSON object: the row as received
    sa.Column("prediction", sa.Text, nullable=False),  # JSON value
    sa.Column("traffic", sa.Text, nullable=False, server_default=LIVE),
    # a shadowed request is logged twice: once per model role
    sa.UniqueConstraint("request_id", "row_index", "model_role", name="uq_predictions_request_row"),
)
feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("request_id", sa.Text, nullable=False),
    sa.Column("row_index", sa.Integer, nullable=False),
    sa.Column("actual", sa.Text, nullable=False),  # JSON value: a class or a number
    sa.UniqueConstraint("request_id", "row_index", name="feedback_row"),
)
COLUMNS = tuple(column.name for column in predictions.columns if column.name != "id")


class PredictionLogError(UserError):
    """The prediction log cannot be opened or read."""

    public = "the prediction log cannot be opened"


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One scored row, as the service hands it over; request id, row index and model role
    identify it, so it is logged at most once."""

    request_id: str
    row_index: int
    model_version: str
    features: dict[str, Any]
    prediction: Any
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    model_role: str = "champion"  # or "challenger", when it answered or shadowed
    traffic: str = LIVE

    def row(self) -> Row:
        """The columns as text: JSON (NaN as null, numpy scalars as numbers), ISO 8601 time."""
        values = {name: getattr(self, name) for name in COLUMNS}
        for name in ("features", "prediction"):
            values[name] = to_json(values[name], inf_nan_mode="null", fallback=_plain).decode()
        return {**values, "created_at": self.created_at.isoformat()}


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for an in-memory one or another database."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def connect(url: str, *, read_only: bool = False) -> sa.Engine:
    """An engine on the log's database; `read_only` (monitoring) never creates a SQLite file."""
    backend, file = sa.make_url(url).get_backend_name(), sqlite_file(url)
    if backend != "sqlite":  # a PostgreSQL server that is down fails fast
        timeout = {"connect_timeout": 5} if backend == "postgresql" else {}
        return sa.create_engine(url, pool_pre_ping=True, connect_args=timeout)
    if file and read_only:
        url = f"sqlite:///file:{file.absolute()}?mode=ro&uri=true"
    elif file:
        file.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)

    @sa.event.listens_for(engine, "connect")
    def pragmas(conn: sqlite3.Connection, _record: Any) -> None:
        """Writers of other processes wait instead of failing; readers never block the writer."""
        conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if not read_only:
            wal(conn)

    return engine


def create_tables(engine: sa.Engine) -> None:
    """CREATE what is missing (workers starting at once may race: fine), and add the column
    that a table made by an older version of the project lacks."""
    try:
        metadata.create_all(engine)
    except sa.exc.SQLAlchemyError:
        if not all(sa.inspect(engine).has_table(name) for name in metadata.tables):
            raise
    if "traffic" not in {c["name"] for c in sa.inspect(engine).get_columns("predictions")}:
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE predictions ADD traffic TEXT DEFAULT '{LIVE}'"))


def insert_rows(engine: sa.Engine, rows: list[Row]) -> list[tuple[Row, str]]:
    """INSERT rows of text (`PredictionRecord.row`), skipping those stored already. When the
    database refuses some for good (`_refusal`), the others go one by one and the refused ones
    are returned, each with why; a failure that may pass (down, locked, no table) raises."""
    if _refusal(engine, rows) is None:
        return []
    refused = [(row, _refusal(engine, [row])) for row in rows]
    return [(row, why) for row, why in refused if why is not None]


def insert_new(table: sa.Table, dialect: str) -> sa.Insert:
    """INSERT that skips rows stored already (a replay, a label sent again): SQLite and
    PostgreSQL do that themselves; another database raises on a duplicate."""
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return table.insert()


def _refusal(engine: sa.Engine, rows: list[Row]) -> str | None:
    """None once the rows are stored; why, when the database refuses them for good (a
    constraint, a value it cannot store, a damaged row)."""
    try:
        with engine.begin() as conn:
            values = [{name: row[name] for name in COLUMNS} for row in rows]  # not the spool's id
            for value in values:  # a damaged row raises KeyError, TypeError or ValueError
                value["created_at"] = datetime.fromisoformat(value["created_at"])
            conn.execute(insert_new(predictions, conn.dialect.name), values)
    except (sa.exc.IntegrityError, sa.exc.DataError, KeyError, TypeError, ValueError) as exc:
        return reason(exc)
    except sa.exc.DBAPIError:  # down, locked, no table: it may pass
        raise
    except sa.exc.StatementError as exc:  # a value the driver cannot take
        return reason(exc)
    return None


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


def wal(conn: sqlite3.Connection) -> None:
    """Switch a SQLite file to WAL. When workers start together, SQLite answers all but one
    "database is locked" at once, without waiting (a lock upgrade that could deadlock): retry."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
