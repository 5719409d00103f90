"""The prediction log: every served prediction, written off the request path by a background thread.

SQLite (the default) runs in WAL mode with a busy timeout, so several uvicorn workers and a
monitoring job can use the same file at once; any other SQLAlchemy URL (PostgreSQL) works too.
A row is in the spool (journal.py) from the moment it is answered until the database holds it:
what happens when the database fails is in the README ("When the prediction log fails").
"""

from __future__ import annotations

import atexit
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic_core import from_json, to_json
from sqlalchemy import (
    Column,
    CursorResult,
    DateTime,
    Engine,
    Insert,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    inspect,
    make_url,
    select,
)
from sqlalchemy.exc import SQLAlchemyError

from .errors import UserError, mask_url, mask_urls
from .journal import Journal
from .log_writer import Writer

if TYPE_CHECKING:  # only monitoring reads the log back into a frame; the service never does
    import pandas as pd

log = logging.getLogger(__name__)

CLOSE_SECONDS = 4.0  # at shutdown, to write what is queued; the rest stays in the spool
SQLITE_BUSY_TIMEOUT_MS = 30_000

metadata = MetaData()
predictions = Table(
    "predictions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("request_id", Text, nullable=False),
    Column("row_index", Integer, nullable=False),  # the row's position in its request
    Column("model_role", Text, nullable=False, server_default="champion"),
    Column("model_version", Text, nullable=False),
    Column("features", Text, nullable=False),  # JSON object: the row as received
    Column("prediction", Text, nullable=False),  # JSON value
    # a shadowed request is logged twice: once per model role
    UniqueConstraint("request_id", "row_index", "model_role", name="uq_predictions_request_row"),
)


class PredictionLogError(UserError):
    """The prediction log cannot be opened."""

    public = "the prediction log cannot be opened"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One scored row; `request_id` + `row_index` + `model_role` identify it, so it is logged
    at most once."""

    request_id: str
    row_index: int
    model_version: str
    features: dict[str, Any]
    prediction: Any
    created_at: datetime = field(default_factory=_now)
    model_role: str = "champion"  # or "challenger" when a second model answered


class PredictionLog:
    """Append-only log of predictions, durable from the moment a row is answered.

    `log()` appends the rows to the spool (journal.py) and queues them; a writer thread
    (log_writer.py) inserts them in batches, keeps them in the spool while the database fails
    and writes them once it is back. `start()` opens the spool and starts the writer (a server
    database that is down at start is waited for); `close()` stops within a budget.
    `read_latest()` and `count()` work without `start()`, e.g. from the monitoring job.
    """

    def __init__(
        self,
        url: str,
        spool_dir: Path | None = None,
        observe: Callable[[str, int], None] | None = None,
    ) -> None:
        self.url = url
        self.spool_dir = spool_dir or default_spool_dir(url)
        self._engine: Engine | None = None
        self._writer = Writer(
            Journal(self.spool_dir),
            self._insert,
            lambda: _create_table(self.engine),
            mask_url(url),
            observe or (lambda outcome, rows: None),
        )
        self._running = False
        self._file_id: tuple[int, int] | None = None  # of the SQLite file the engine writes to

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = _create_engine(self.url)
        return self._engine

    @property
    def degraded(self) -> str | None:
        """Why rows are not reaching the database now (they wait in the spool), or None."""
        return self._writer.degraded

    @property
    def counts(self) -> Counter[str]:
        """Rows written, spooled, replayed and dropped so far."""
        return self._writer.counts

    def start(self) -> None:
        """Open the spool, create the table and start the writer. A SQLite file that cannot be
        opened is a setting to fix; a database server that is down is waited for."""
        failure = None
        try:
            self._writer.journal.open()
            _create_table(self.engine)
            self._file_id = self._sqlite_file_id()
        except ImportError as exc:
            raise PredictionLogError(
                f"The prediction log {self._safe_url} needs the database driver {exc.name!r}: "
                "install it (e.g. `uv pip install psycopg[binary]` for PostgreSQL)."
            ) from exc
        except (SQLAlchemyError, OSError) as exc:
            if make_url(self.url).get_backend_name() == "sqlite" or not self.spool_dir.is_dir():
                raise PredictionLogError(
                    f"Cannot open the prediction log {self._safe_url} (spool {self.spool_dir}): "
                    f"{_reason(exc)}. Check serving.prediction_log_url in config.yaml."
                ) from exc
            failure = exc
        self._writer.start(failure)
        self._running = True
        # Flush even if the server is stopped without running its shutdown (a second Ctrl-C).
        atexit.register(self.close)

    def log(self, records: list[PredictionRecord]) -> None:
        """Append `records` to the spool and queue them; never waits for the database."""
        if not self._running:
            log.error("Prediction log is not running: %d prediction(s) not logged.", len(records))
            return
        self._writer.submit([_row(r) for r in records])

    def close(self, budget: float = CLOSE_SECONDS) -> None:
        """Write what the database takes within `budget` seconds; the rest stays in the spool,
        written at the next start. Logs how many rows went where."""
        if not self._running:
            return
        self._running = False
        atexit.unregister(self.close)
        stopped, left = self._writer.stop(budget)
        counts = self.counts
        log.log(
            logging.WARNING if left or counts["dropped"] else logging.INFO,
            "Prediction log closed: %d row(s) written, %d replayed, %d left in the spool %s "
            "(written at the next start), %d dropped.",
            counts["written"],
            counts["replayed"],
            left,
            self.spool_dir,
            counts["dropped"],
        )
        if stopped:
            self.engine.dispose()

    def count(self) -> int:
        """How many rows are logged."""
        if not self._has_table():
            return 0
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(predictions)).scalar_one())

    def read_latest(self, n: int) -> pd.DataFrame:
        """The latest `n` logged rows, oldest first: created_at, model_version, prediction and
        one column per feature."""
        import pandas as pd

        rows: list[Any] = []
        if self._has_table():
            query = select(predictions).order_by(predictions.c.id.desc()).limit(n)
            with self.engine.connect() as conn:
                rows = list(conn.execute(query))[::-1]
        logged = pd.DataFrame(
            {
                "created_at": pd.to_datetime([r.created_at for r in rows], utc=True),
                "model_version": pd.Series([r.model_version for r in rows], dtype=object),
                "prediction": pd.Series([from_json(r.prediction) for r in rows], dtype=object),
            }
        )
        features = pd.DataFrame.from_records([from_json(r.features) for r in rows])
        return pd.concat([logged, features], axis=1)

    def _insert(self, rows: list[dict[str, Any]]) -> int:
        """INSERT, skipping rows the database has (a replay); a deleted SQLite file is made
        again. Returns how many rows were new. On failure, the next try gets new connections."""
        insert = _insert_new(self.engine.dialect.name)
        try:
            with self.engine.begin() as conn:
                inserted = _new_rows(conn.execute(insert, rows), rows)
            if self._file_id is not None and self._sqlite_file_id() != self._file_id:
                # The rows went to a file deleted or replaced under the open connection.
                log.error("Prediction log: %s was deleted or replaced; creating it again.",
                          self._safe_url)  # fmt: skip
                self.engine.dispose()
                _create_table(self.engine)
                self._file_id = self._sqlite_file_id()
                with self.engine.begin() as conn:
                    inserted = _new_rows(conn.execute(insert, rows), rows)
        except SQLAlchemyError:
            self.engine.dispose()
            raise
        return inserted

    def _sqlite_file_id(self) -> tuple[int, int] | None:
        """The SQLite file's device and inode ((0, 0) once deleted); None for other databases."""
        database = make_url(self.url).database
        if self.engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
            return None
        try:
            stat = Path(database).stat()
        except FileNotFoundError:
            return (0, 0)
        return (stat.st_dev, stat.st_ino)

    def _has_table(self) -> bool:
        """Without opening a missing SQLite file, which would create it."""
        database = make_url(self.url).database
        if self.engine.dialect.name == "sqlite" and database and not Path(database).is_file():
            return False
        return inspect(self.engine).has_table(predictions.name)

    @property
    def _safe_url(self) -> str:
        return mask_url(self.url)


def default_spool_dir(url: str) -> Path:
    """Beside a SQLite file (predictions.db-spool/), else spool/ in the working folder."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(f"{parsed.database}-spool")
    return Path("spool")


def _row(record: PredictionRecord) -> dict[str, Any]:
    """A record as the table's columns."""
    return {
        "created_at": record.created_at,
        "request_id": record.request_id,
        "row_index": record.row_index,
        "model_role": record.model_role,
        "model_version": record.model_version,
        "features": _json(record.features),
        "prediction": _json(record.prediction),
    }


def _new_rows(result: CursorResult[Any], rows: list[dict[str, Any]]) -> int:
    """Rows an INSERT added: those it returned (PostgreSQL), else its row count."""
    if result.returns_rows:
        return len(result.all())
    return result.rowcount if result.rowcount >= 0 else len(rows)


def _insert_new(dialect: str) -> Insert:
    """INSERT that skips rows already logged (a replay, a retried batch): SQLite and
    PostgreSQL do that themselves; another database raises on a duplicate."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(predictions).on_conflict_do_nothing()
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        # psycopg's executemany does not count rows: the new ones are returned instead
        return postgresql_insert(predictions).on_conflict_do_nothing().returning(predictions.c.id)
    return predictions.insert()


def _json(value: Any) -> str:
    """Compact JSON; NaN becomes null and numpy scalars plain numbers."""
    return to_json(value, inf_nan_mode="null", fallback=_plain).decode()


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


def _reason(exc: Exception) -> str:
    """The database's own message, without SQLAlchemy's statement dump."""
    return mask_urls(str(getattr(exc, "orig", None) or exc))


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":  # a server that is down fails fast
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Readers never block the writer (WAL); writers of other processes wait instead of failing."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def _create_table(engine: Engine) -> None:
    """CREATE TABLE unless it exists; two workers starting at once may race, which is fine."""
    try:
        metadata.create_all(engine)
    except SQLAlchemyError:
        if not inspect(engine).has_table(predictions.name):
            raise
