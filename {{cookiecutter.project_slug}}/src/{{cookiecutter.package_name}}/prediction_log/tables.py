"""The prediction log's tables, defined once, and the engine that opens its database.

    predictions   one row per scored row: when, which request and row, which model answered
                  (role, version), the features as received, the prediction, and the traffic:
                  live, smoke (a `make smoke` check) or shadow (the challenger scoring a request
                  the champion answered). Drift, quality and compare count live traffic only.
    feedback      the true value of a logged row, sent later to POST /feedback.

SQLite (the default) runs in WAL mode with a busy timeout, so several workers and a monitoring job
use one file at once; any other SQLAlchemy URL (PostgreSQL) works too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..errors import UserError

SQLITE_BUSY_TIMEOUT_MS = 30_000
LIVE, SMOKE, SHADOW = "live", "smoke", "shadow"  # the traffic a row was

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


class PredictionLogError(UserError):
    """The prediction log cannot be opened or read."""

    public = "the prediction log cannot be opened"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for an in-memory one or another database."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def connect(url: str, *, read_only: bool = False) -> sa.Engine:
    """An engine on the log's database; `read_only` (monitoring) never creates a SQLite file."""
    backend, file = sa.make_url(url).get_backend_name(), sqlite_file(url)
    if backend == "postgresql":  # a server that is down fails fast
        return sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    if backend != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    if file and read_only:
        url = f"sqlite:///file:{file.absolute()}?mode=ro&uri=true"
    elif file:
        file.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    sa.event.listen(engine, "connect", _read_only if read_only else _sqlite_pragmas)
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
            conn.execute(
                sa.text(f"ALTER TABLE predictions ADD traffic TEXT NOT NULL DEFAULT '{LIVE}'")
            )


def insert_new(table: sa.Table, dialect: str) -> sa.Insert:
    """INSERT that skips rows stored already (a replay, a label sent again): SQLite and
    PostgreSQL do that themselves; another database raises on a duplicate."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(table).on_conflict_do_nothing()
    return table.insert()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Readers never block the writer (WAL); writers of other processes wait instead of failing."""
    _read_only(dbapi_connection, _record)
    dbapi_connection.execute("PRAGMA journal_mode = WAL")
    dbapi_connection.execute("PRAGMA synchronous = NORMAL")


def _read_only(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
