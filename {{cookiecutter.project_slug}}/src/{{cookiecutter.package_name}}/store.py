"""The prediction log: every served prediction, written off the request path by a background thread.

SQLite (the default) runs in WAL mode with a busy timeout, so several uvicorn workers and a
monitoring job can use the same file at once; any other SQLAlchemy URL (PostgreSQL) works too.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic_core import from_json, to_json
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
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

if TYPE_CHECKING:  # only monitoring reads the log back into a frame; the service never does
    import pandas as pd

log = logging.getLogger(__name__)

BATCH_ROWS = 500  # rows per INSERT (executemany)
LINGER_SECONDS = 0.02  # how long the writer waits for more rows before an INSERT
WRITE_ATTEMPTS = 3  # a failed batch is retried, then dropped with an error line
RETRY_SECONDS = 0.5
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
    """Append-only log of predictions. `log()` only queues; a writer thread inserts in batches.

    `start()` creates the table and the writer; `close()` writes everything still queued.
    `read_latest()` works without `start()`, e.g. from the monitoring job.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._queue: queue.SimpleQueue[list[PredictionRecord] | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = _create_engine(self.url)
        return self._engine

    def start(self) -> None:
        """Create the table if needed and start the writer thread."""
        try:
            _create_table(self.engine)
        except ImportError as exc:
            raise PredictionLogError(
                f"The prediction log {self._safe_url} needs the database driver {exc.name!r}: "
                "install it (e.g. `uv pip install psycopg[binary]` for PostgreSQL)."
            ) from exc
        except (SQLAlchemyError, OSError) as exc:
            raise PredictionLogError(
                f"Cannot open the prediction log {self._safe_url}: {_reason(exc)}. "
                "Check serving.prediction_log_url in config.yaml."
            ) from exc
        self._writer = threading.Thread(target=self._drain, name="prediction-log", daemon=True)
        self._writer.start()
        # Flush even if the server is stopped without running its shutdown (a second Ctrl-C).
        atexit.register(self.close)

    def log(self, records: list[PredictionRecord]) -> None:
        """Queue `records` for writing; never blocks on the database."""
        if self._writer is None:
            log.error("Prediction log is not running: %d prediction(s) not logged.", len(records))
            return
        self._queue.put(records)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop the writer."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        atexit.unregister(self.close)
        self._queue.put(None)
        writer.join(timeout)
        if writer.is_alive():
            log.error("Prediction log: still writing after %.0f s; the rest is lost.", timeout)
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

    def _drain(self) -> None:
        """Writer thread: wait for a request's rows, let others join them briefly, insert all."""
        stopping = False
        while not stopping:
            batch: list[PredictionRecord] = []
            item = self._queue.get()
            if item is not None:
                time.sleep(LINGER_SECONDS)  # one INSERT for many requests: commits are costly
            while True:
                if item is None:
                    stopping = True
                    break
                batch.extend(item)
                if len(batch) >= BATCH_ROWS:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                try:
                    self._write(batch)
                except Exception:  # a bug must not stop the writer: log it, keep going
                    log.exception("Prediction log: %d row(s) not written", len(batch))

    def _write(self, batch: list[PredictionRecord]) -> None:
        rows = [
            {
                "created_at": r.created_at,
                "request_id": r.request_id,
                "row_index": r.row_index,
                "model_role": r.model_role,
                "model_version": r.model_version,
                "features": _json(r.features),
                "prediction": _json(r.prediction),
            }
            for r in batch
        ]
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self.engine.begin() as conn:
                    conn.execute(predictions.insert(), rows)
                return
            except SQLAlchemyError as exc:
                if attempt == WRITE_ATTEMPTS:
                    log.error(
                        "Prediction log: %d row(s) not written to %s: %s",
                        len(rows),
                        self._safe_url,
                        _reason(exc),
                    )
                else:
                    time.sleep(RETRY_SECONDS * attempt)

    def _has_table(self) -> bool:
        """Without opening a missing SQLite file, which would create it."""
        database = make_url(self.url).database
        if self.engine.dialect.name == "sqlite" and database and not Path(database).is_file():
            return False
        return inspect(self.engine).has_table(predictions.name)

    @property
    def _safe_url(self) -> str:
        return mask_url(self.url)


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
