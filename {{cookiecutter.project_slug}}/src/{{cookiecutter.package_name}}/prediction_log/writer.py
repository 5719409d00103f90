"""Writing the prediction log: the request path adds rows to the spool, a thread moves them on.

`log()` never waits for the database. Every answered row is in the spool (spool.py) until the
database holds it. While the spool itself refuses rows (a full or read-only disk) they wait in
memory, up to MEMORY_ROWS, and go to the spool or the database once either takes them; only rows
beyond that bound are dropped, counted and logged. The log is `degraded` while rows do not reach
the database: /ready says so, and with prediction_log.mode fail_closed /predict answers 503.
"""

from __future__ import annotations

import atexit
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic_core import to_json
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

from ..errors import mask_url, reason
from .spool import Row, Spool, default_spool_dir
from .tables import LIVE, PredictionLogError, connect, create_tables, insert_new, sqlite_file
from .tables import predictions as table

log = logging.getLogger(__name__)

BATCH_ROWS = 500  # rows per INSERT
LINGER_SECONDS = 0.2  # the writer wakes this often: one INSERT for the requests of that time
RETRY_SECONDS = 1.0  # while the database fails, it is tried again this often
STALL_SECONDS = 2.0  # rows waiting longer than this for the database: degraded
MEMORY_ROWS = 5_000  # rows kept in memory while the spool refuses them; more are dropped
CLOSE_SECONDS = 4.0  # at shutdown, to write what waits; the rest stays in the spool
NOTICE_SECONDS = 10.0  # a problem that repeats (drops, refused rows) is logged this often
# What a row the database refuses for good raises; anything else may pass (down, locked, no table).
REFUSED = (IntegrityError, DataError, KeyError, TypeError, ValueError)


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One scored row; request id, row index and model role identify it: logged once."""

    request_id: str
    row_index: int
    model_version: str
    features: dict[str, Any]
    prediction: Any
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    model_role: str = "champion"  # or "challenger", when it answered or shadowed
    traffic: str = LIVE


class PredictionLog:
    """Append-only log of the predictions: `start()`, `log()` per request, `close()`."""

    def __init__(
        self, url: str, spool: Path | None = None, observe: Callable[[str, int], None] | None = None
    ) -> None:
        self.url, self.safe_url = url, mask_url(url)
        self.spool = Spool(spool or default_spool_dir(url))
        self.counts: Counter[str] = Counter()  # rows spooled, held, written, dropped, quarantined
        self._observe = observe or (lambda outcome, rows: None)
        self._held: list[Row] = []  # rows the spool refused, waiting in memory
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._failing: str | None = None  # why the database does not take rows, while it does not
        self._spool_failing: str | None = None
        self._writing_since: float | None = None  # when the INSERT under way started
        self._waited = 0.0  # seconds the oldest row of the spool has waited
        self._noticed = self._deadline = 0.0
        self._file: tuple[int, int] | None = None  # of the SQLite file the engine writes to

    @property
    def degraded(self) -> str | None:
        """Why rows are not reaching the database now, or None."""
        started = self._writing_since
        if started is not None and time.monotonic() - started > STALL_SECONDS:
            return f"the database has not answered for {STALL_SECONDS:g} s"
        if self._waited > STALL_SECONDS:
            return f"rows have waited {self._waited:.0f} s for the database"
        return self._spool_failing or self._failing

    def start(self) -> None:
        """Open the spool and the tables, start the writer. A spool or SQLite file that cannot
        be opened is a setting to fix; a database server that is down is waited for."""
        try:
            self.spool.open()
            self.engine = connect(self.url)
            create_tables(self.engine)
        except ImportError as exc:
            raise PredictionLogError(
                f"The prediction log {self.safe_url} needs the database driver {exc.name!r}: "
                "install it (e.g. `uv pip install psycopg[binary]` for PostgreSQL)."
            ) from exc
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            if sqlite_file(self.url) or not isinstance(exc, SQLAlchemyError):
                raise PredictionLogError(
                    f"Cannot open the prediction log {self.safe_url} (spool "
                    f"{self.spool.directory}): {reason(exc)}. Check prediction_log in config.yaml."
                ) from exc
            self._fail(exc)
        self._file = _file_id(self.url)
        self._thread.start()
        atexit.register(self.close)  # also when the server stops without its shutdown

    def log(self, records: list[PredictionRecord]) -> None:
        """Add `records` to the spool (or, while it refuses them, to memory)."""
        if not self._thread.is_alive():
            log.error("Prediction log is not running: %d prediction(s) not logged.", len(records))
            return
        rows = [_row(record) for record in records]
        try:
            self.spool.add(rows)
        except (sqlite3.Error, OSError) as exc:
            self._hold(rows, exc)
            return
        self._count("spooled", len(rows))
        if self._spool_failing:
            log.warning("Prediction log: the spool %s takes rows again.", self.spool.directory)
            self._spool_failing = None

    def close(self, budget: float = CLOSE_SECONDS) -> None:
        """Write what the database takes within `budget` seconds; the rest stays in the spool
        for the next start. Logs how many rows went where."""
        if not self._thread.is_alive() or self._stop.is_set():
            return
        atexit.unregister(self.close)
        self._deadline = time.monotonic() + budget
        self._stop.set()
        self._thread.join(budget)
        if self._thread.is_alive():  # stuck in a database call: the rows are in the spool
            log.error("Prediction log: the database did not answer within %g s.", budget)
        with self._lock:
            self._count("dropped", len(self._held))  # neither the spool nor the database took them
        left = 0 if self._spool_failing else self.spool.backlog()[0]
        self.spool.close()
        self.engine.dispose()
        log.log(
            logging.WARNING if left or self.counts["dropped"] else logging.INFO,
            "Prediction log closed: %d row(s) written, %d left in the spool %s (written at the "
            "next start), %d dropped, %d quarantined.",
            *(self.counts["written"], left, self.spool.directory),
            *(self.counts["dropped"], self.counts["quarantined"]),
        )

    def _run(self) -> None:
        while not self._stop.wait(RETRY_SECONDS if self._failing else LINGER_SECONDS):
            self._step()
        self._step(self._deadline)  # the last round, within the budget of `close`

    def _step(self, deadline: float | None = None) -> None:
        """One round: rows held in memory to the spool, then (when leading) spool to database."""
        try:
            self._flush_held()
            if self.spool.lead():
                self._drain(deadline)
            waiting, self._waited = self.spool.backlog()
            self._observe("waiting", waiting)
        except (sqlite3.Error, OSError) as exc:  # new rows wait in memory meanwhile
            self._spool_failing = f"the spool cannot be read ({exc})"
        except Exception:  # a bug must not stop the writer: the rows stay where they are
            log.exception("Prediction log: unexpected error; the rows stay in the spool")

    def _drain(self, deadline: float | None) -> None:
        """Move the spool's rows to the database, oldest first, a batch at a time."""
        while rows := self.spool.take(BATCH_ROWS):
            try:
                if self._failing:
                    create_tables(self.engine)  # e.g. the table was dropped
                self._write(rows)
            except Exception as exc:  # whatever the database says, the rows wait in the spool
                self._fail(exc)
                return
            self.spool.remove(rows[-1]["id"])
            if self._failing:
                log.warning("Prediction log: %s takes rows again.", self.safe_url)
                self._failing = None
            if len(rows) < BATCH_ROWS or (deadline and time.monotonic() > deadline):
                return

    def _write(self, rows: list[Row]) -> None:
        """INSERT the rows; when the database refuses some for good (a constraint, a value it
        cannot store), write the others one at a time and set those aside (quarantine)."""
        try:
            return self._insert([_columns(row) for row in rows])
        except REFUSED:
            pass
        except StatementError as exc:  # a value SQLAlchemy could not even send
            if isinstance(exc, DBAPIError):
                raise
        for row in rows:
            try:
                self._insert([_columns(row)])
            except (*REFUSED, StatementError) as exc:
                if isinstance(exc, DBAPIError) and not isinstance(exc, REFUSED):
                    raise
                self.spool.quarantine(row, reason(exc))
                self._count("quarantined", 1)
                self._notice(
                    "Prediction log: rows the database refuses are set aside in %s (%d in all).",
                    *(self.spool.quarantine_file, self.counts["quarantined"]),
                )

    def _insert(self, rows: list[Row]) -> None:
        """INSERT, skipping rows the database has; a deleted SQLite file is made again."""
        self._writing_since = time.monotonic()
        try:
            for attempt in range(2):
                with self.engine.begin() as conn:
                    conn.execute(insert_new(table, conn.dialect.name), rows)
                if attempt or _file_id(self.url) == self._file:
                    break  # written where it will stay
                log.error("Prediction log: %s was deleted; creating it again.", self.safe_url)
                self.engine.dispose()
                create_tables(self.engine)
                self._file = _file_id(self.url)
        except SQLAlchemyError:
            self.engine.dispose()  # the next try gets new connections
            raise
        finally:
            self._writing_since = None
        self._count("written", len(rows))

    def _hold(self, rows: list[Row], exc: Exception) -> None:
        if not self._spool_failing:
            log.error(
                "Prediction log: the spool %s refuses rows (%s); up to %d wait in memory.",
                self.spool.directory,
                exc,
                MEMORY_ROWS,
            )
        self._spool_failing = f"the spool cannot be written ({exc})"
        with self._lock:
            kept = rows[: max(MEMORY_ROWS - len(self._held), 0)]
            self._held.extend(kept)
        self._count("held", len(kept))
        if len(rows) > len(kept):
            self._count("dropped", len(rows) - len(kept))
            self._notice(
                "Prediction log: rows dropped: neither the spool %s nor memory takes more "
                "(%d in all).",
                *(self.spool.directory, self.counts["dropped"]),
            )

    def _flush_held(self) -> None:
        """Rows held in memory to the spool or, while it still fails, to the database."""
        with self._lock:
            rows, self._held = self._held, []
        if not rows:
            return
        try:
            try:
                self.spool.add(rows)
                self._count("spooled", len(rows))
            except (sqlite3.Error, OSError):
                self._insert([_columns(row) for row in rows])
        except Exception:
            with self._lock:
                self._held[:0] = rows
            return
        log.warning("Prediction log: %d row(s) held in memory are safe again.", len(rows))

    def _fail(self, exc: Exception) -> None:
        if not self._failing:
            log.error(
                "Prediction log: %s does not take rows (%s); they wait in the spool %s until it "
                "does.",
                *(self.safe_url, reason(exc), self.spool.directory),
            )
        self._failing = reason(exc)

    def _count(self, outcome: str, rows: int) -> None:
        if rows:
            self.counts[outcome] += rows
            self._observe(outcome, rows)

    def _notice(self, message: str, *args: object) -> None:
        """Log a problem that repeats at most every NOTICE_SECONDS (with its running count)."""
        if time.monotonic() - self._noticed > NOTICE_SECONDS:
            self._noticed = time.monotonic()
            log.error(message, *args)


def _row(record: PredictionRecord) -> Row:
    """A record as the spool keeps it: JSON text, the time in ISO 8601."""
    return {
        "created_at": record.created_at.isoformat(),
        "request_id": record.request_id,
        "row_index": record.row_index,
        "model_role": record.model_role,
        "model_version": record.model_version,
        "features": _json(record.features),
        "prediction": _json(record.prediction),
        "traffic": record.traffic,
    }


def _columns(row: Row) -> Row:
    """A spooled row as the table's columns (KeyError, TypeError or ValueError when it is not)."""
    values = {column.name: row[column.name] for column in table.columns if column.name != "id"}
    return {**values, "created_at": datetime.fromisoformat(row["created_at"])}


def _json(value: Any) -> str:
    """Compact JSON; NaN becomes null and numpy scalars plain numbers."""
    return to_json(value, inf_nan_mode="null", fallback=_plain).decode()


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


def _file_id(url: str) -> tuple[int, int] | None:
    """The SQLite file's device and inode ((0, 0) once deleted); None for other databases."""
    file = sqlite_file(url)
    if file is None:
        return None
    try:
        stat = file.stat()
    except FileNotFoundError:
        return (0, 0)
    return (stat.st_dev, stat.st_ino)
