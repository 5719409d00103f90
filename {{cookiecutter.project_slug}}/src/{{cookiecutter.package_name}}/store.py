"""The prediction log: every served prediction, written off the request path by a background thread.

SQLite (the default) runs in WAL mode with a busy timeout, so several uvicorn workers and a
monitoring job can use the same file at once; any other SQLAlchemy URL (PostgreSQL) works too.
A row is in the spool (journal.py) from the moment it is answered until the database holds it:
what happens when the database fails is in the README ("When the prediction log fails").
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
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
from .journal import Journal, Segment

if TYPE_CHECKING:  # only monitoring reads the log back into a frame; the service never does
    import pandas as pd

log = logging.getLogger(__name__)

BATCH_ROWS = 500  # rows per INSERT (executemany)
LINGER_SECONDS = 0.02  # how long the writer waits for more rows before an INSERT
RECONNECT_SECONDS = 1.0  # while the database fails, it is tried again this often
SWEEP_SECONDS = 10.0  # how often the spool is searched for rows of stopped workers
CLOSE_SECONDS = 4.0  # at shutdown, to write what is queued; the rest stays in the spool
STALL_SECONDS = 5.0  # an INSERT taking longer makes the log "degraded" (a frozen server)
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

    `log()` appends the rows to the journal (journal.py) and queues them; a writer thread
    inserts them in batches and lets the journal drop what the database holds. While the
    database fails, rows stay in the journal and the writer retries every RECONNECT_SECONDS,
    then replays them in order. `start()` opens the journal and starts the writer (a server
    database that is down at start is retried the same way); `close()` stops within a budget.
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
        self.counts: Counter[str] = Counter()  # rows: written, spooled, replayed, dropped
        self._observe = observe or (lambda outcome, rows: None)
        self._engine: Engine | None = None
        self._journal = Journal(self.spool_dir)
        self._queue: queue.SimpleQueue[_Entry | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._failing: str | None = None  # why the database does not take rows, while it does not
        self._file_id: tuple[int, int] | None = None  # of the SQLite file the engine writes to
        self._writing_since: float | None = None  # when the INSERT under way started

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = _create_engine(self.url)
        return self._engine

    @property
    def degraded(self) -> str | None:
        """Why rows are not reaching the database now (they wait in the spool), or None."""
        started = self._writing_since
        if started is not None and time.monotonic() - started > STALL_SECONDS:
            return f"the database has not answered for {STALL_SECONDS:g} s"
        return self._failing

    def start(self) -> None:
        """Open the spool, create the table and start the writer. A SQLite file that cannot be
        opened is a setting to fix; a database server that is down is waited for."""
        try:
            self._journal.open()
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
            self._fail(exc)
        self._writer = threading.Thread(target=self._drain, name="prediction-log", daemon=True)
        self._writer.start()
        # Flush even if the server is stopped without running its shutdown (a second Ctrl-C).
        atexit.register(self.close)

    def log(self, records: list[PredictionRecord]) -> None:
        """Append `records` to the spool and queue them; never waits for the database."""
        if self._writer is None:
            log.error("Prediction log is not running: %d prediction(s) not logged.", len(records))
            return
        rows = [_row(r) for r in records]
        segment = None
        try:
            segment = self._journal.append(b"".join(_line(row) for row in rows), len(rows))
        except OSError as exc:  # the database may still take them: only then are they safe
            log.error("Prediction log: cannot write to the spool %s: %s", self.spool_dir, exc)
        self._observe("queued", len(rows))
        self._queue.put(_Entry(segment, rows))

    def close(self, budget: float = CLOSE_SECONDS) -> None:
        """Write what the database takes within `budget` seconds; the rest stays in the spool,
        replayed at the next start. Logs how many rows went where."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        atexit.unregister(self.close)
        self._queue.put(None)
        writer.join(budget)
        if writer.is_alive():  # stuck in a database call: its rows are in the spool already
            log.error("Prediction log: the database did not answer within %g s.", budget)
        left = self._journal.release()
        log.log(
            logging.WARNING if left or self.counts["dropped"] else logging.INFO,
            "Prediction log closed: %d row(s) written, %d replayed, %d left in the spool %s "
            "(replayed at the next start), %d dropped.",
            self.counts["written"],
            self.counts["replayed"],
            left,
            self.spool_dir,
            self.counts["dropped"],
        )
        if not writer.is_alive():
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
        """Writer thread: replay what stopped workers left in the spool, then write the queued
        rows in batches; while the database fails, retry it every RECONNECT_SECONDS."""
        self._replay(own=False)
        last_sweep = time.monotonic()
        stopping = False
        while not stopping:
            wait = RECONNECT_SECONDS if self._failing else SWEEP_SECONDS
            entries, stopping = self._next_batch(wait)
            try:
                if entries:
                    self._write(entries)
                if self._failing or time.monotonic() - last_sweep > SWEEP_SECONDS:
                    self._replay(own=self._failing is not None)
                    last_sweep = time.monotonic()
            except Exception:  # a bug must not stop the writer: the rows are in the spool
                log.exception("Prediction log: unexpected error; the rows stay in the spool")

    def _next_batch(self, wait: float) -> tuple[list[_Entry], bool]:
        """A request's rows, and those of the requests that come within LINGER_SECONDS; and
        whether to stop."""
        try:
            item = self._queue.get(timeout=wait)
        except queue.Empty:
            return [], False
        if item is None:
            return [], True
        time.sleep(LINGER_SECONDS)  # one INSERT for many requests: commits are costly
        entries, rows = [item], len(item.rows)
        while rows < BATCH_ROWS:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return entries, True
            entries.append(item)
            rows += len(item.rows)
        return entries, False

    def _write(self, entries: list[_Entry]) -> None:
        """Insert the rows; while the database fails, they stay in the spool (or, if the
        spool did not take them either, are dropped, counted and logged)."""
        # Rows of a segment replayed meanwhile are in the database already.
        live = [e for e in entries if e.segment is None or not e.segment.discarded]
        self._observe("dequeued", _rows(entries))
        if not self._failing:
            try:
                self._insert([row for entry in live for row in entry.rows])
            except (SQLAlchemyError, OSError) as exc:
                self._fail(exc)
            else:
                self._count("written", _rows(live))
                for entry in live:
                    if entry.segment is not None:
                        self._journal.committed(entry.segment, len(entry.rows))
                return
        spooled = _rows([e for e in live if e.segment is not None])
        self._count("spooled", spooled)
        if dropped := _rows(live) - spooled:
            self._count("dropped", dropped)
            log.error(
                "Prediction log: %d row(s) dropped: neither the database nor the spool %s "
                "takes them (%d dropped in all).",
                dropped,
                self.spool_dir,
                self.counts["dropped"],
            )

    def _replay(self, *, own: bool) -> None:
        """Write the spooled rows, oldest first: those of workers that are gone and, with
        `own` (while the database fails), this worker's."""
        if own:
            self._journal.rotate()  # new rows go to a new segment, replayed or written later
        replayed = 0
        try:
            if self._failing:
                _create_table(self.engine)
            for segment in self._journal.replayable(own):
                rows = segment.read()
                for start in range(0, len(rows), BATCH_ROWS):
                    chunk = [_parsed(row) for row in rows[start : start + BATCH_ROWS]]
                    replayed += self._insert(chunk)  # rows written already are skipped
                self._journal.discard(segment)
        except (SQLAlchemyError, OSError) as exc:
            self._fail(exc)
            return
        finally:
            self._count("replayed", replayed)
        if self._failing:
            log.warning(
                "Prediction log: the database takes rows again; %d spooled row(s) replayed.",
                replayed,
            )
            self._failing = None
        elif replayed:
            log.info("Prediction log: %d row(s) left by a stopped worker replayed.", replayed)

    def _insert(self, rows: list[dict[str, Any]]) -> int:
        """INSERT, skipping rows the database has; a deleted SQLite file is made again.
        Returns how many rows were new."""
        if not rows:
            return 0
        insert = _insert_new(self.engine.dialect.name)
        self._writing_since = time.monotonic()
        try:
            with self.engine.begin() as conn:
                inserted = _new_rows(conn.execute(insert, rows), rows)
        finally:
            self._writing_since = None
        if self._file_id is not None and self._sqlite_file_id() != self._file_id:
            # The rows went to a file that was deleted or replaced under the open connection.
            log.error(
                "Prediction log: %s was deleted or replaced; creating it again.", self._safe_url
            )
            self.engine.dispose()
            _create_table(self.engine)
            self._file_id = self._sqlite_file_id()
            with self.engine.begin() as conn:
                inserted = _new_rows(conn.execute(insert, rows), rows)
        return inserted

    def _fail(self, exc: Exception) -> None:
        self.engine.dispose()  # the next try opens new connections: old ones may be broken
        if not self._failing:
            log.error(
                "Prediction log: %s does not take rows (%s); they are kept in the spool %s "
                "and written once it does (retried every %g s).",
                self._safe_url,
                _reason(exc),
                self.spool_dir,
                RECONNECT_SECONDS,
            )
        self._failing = _reason(exc)

    def _count(self, outcome: str, rows: int) -> None:
        if rows:
            self.counts[outcome] += rows
            self._observe(outcome, rows)

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


@dataclass(frozen=True, slots=True)
class _Entry:
    """A request's rows in the queue, and the spool segment that holds them (None: the spool
    could not take them)."""

    segment: Segment | None
    rows: list[dict[str, Any]]


def _rows(entries: list[_Entry]) -> int:
    return sum(len(entry.rows) for entry in entries)


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


def _line(row: dict[str, Any]) -> bytes:
    return to_json(row) + b"\n"


def _parsed(row: dict[str, Any]) -> dict[str, Any]:
    """A spool line back as the table's columns."""
    return {**row, "created_at": datetime.fromisoformat(row["created_at"])}


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
