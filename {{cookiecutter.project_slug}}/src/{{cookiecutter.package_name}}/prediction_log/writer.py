"""Writing the prediction log: the request path adds rows to the spool, a thread moves them on.

`log()` never waits for the database. Every answered row is in the spool (spool.py) until the
database holds it, or in memory while the spool refuses it (a full or read-only disk; rows past
MEMORY_ROWS are dropped, counted and logged). The log is `degraded` while rows do not reach the
database: /ready says so, and with prediction_log.mode fail_closed /predict answers 503.
"""

from __future__ import annotations

import atexit
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from ..errors import mask_url, reason
from .spool import Spool
from .tables import (
    PredictionLogError,
    PredictionRecord,
    Row,
    connect,
    create_tables,
    insert_rows,
    sqlite_file,
)

log = logging.getLogger(__name__)

BATCH_ROWS = 500  # rows per INSERT
LINGER_SECONDS = 0.2  # the writer wakes this often: one INSERT for the requests of that time
RETRY_SECONDS = 1.0  # while the database fails, it is tried again this often
STALL_SECONDS = 2.0  # rows waiting longer than this for the database: degraded
MEMORY_ROWS = 20_000  # rows kept in memory while the spool refuses them; more are dropped
CLOSE_SECONDS = 4.0  # at shutdown, to write what waits; the rest stays in the spool
NOTICE_SECONDS = 10.0  # a problem that repeats (drops, refused rows) is logged this often
NOTICED = {
    "dropped": "dropped in all: neither memory nor the spool took them",
    "quarantined": "set aside in quarantine.jsonl in all: the database refuses them",
}


class PredictionLog:
    """Append-only log of the predictions: `start()`, `log()` per request, `close()`."""

    def __init__(
        self, url: str, spool: Path | None = None, observe: Callable[[str, int], None] | None = None
    ) -> None:
        self.url, self.safe_url = url, mask_url(url)
        file = sqlite_file(url)  # the spool goes beside it (predictions.db-spool/), else in spool/
        self.spool = Spool(spool or Path(f"{file}-spool" if file else "spool"))
        self.counts: Counter[str] = Counter()  # rows spooled, held, written, dropped, quarantined
        self._observe = observe or (lambda outcome, rows: None)
        self._held: list[Row] = []  # rows the spool refused, waiting in memory
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._failing: str | None = None  # why the database does not take rows, while it does not
        self._spool_failing: str | None = None
        self._writing_since: float | None = None  # when the INSERT under way started
        self._waited = self._noticed = self._deadline = 0.0
        self._file: tuple[int, int] | None = None  # of the SQLite file the engine writes to

    @property
    def degraded(self) -> str | None:
        """Why rows are not reaching the database now, or None."""
        since = self._writing_since
        waited = max(self._waited, 0.0 if since is None else time.monotonic() - since)
        if waited > STALL_SECONDS:
            return f"rows have waited {waited:.0f} s for the database"
        return self._spool_failing or self._failing

    def start(self) -> None:
        """Open the spool and the tables, start the writer. A spool or SQLite file that cannot
        be opened is a setting to fix; a database server that is down is waited for."""
        try:
            self.spool.backlog()  # opens it
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
        rows = [record.row() for record in records]
        try:
            self.spool.add(rows)
        except (sqlite3.Error, OSError) as exc:
            if not self._spool_failing:
                log.error("Prediction log: the spool refuses rows (%s); they wait in memory.", exc)
            self._spool_failing = f"the spool cannot be written ({exc})"
            with self._lock:
                kept = rows[: max(MEMORY_ROWS - len(self._held), 0)]
                self._held += kept
            self._count("held", len(kept))
            self._count("dropped", len(rows) - len(kept))
            return
        self._count("spooled", len(rows))
        if self._spool_failing:
            log.warning("Prediction log: the spool takes rows again.")
            self._spool_failing = None

    def close(self, budget: float = CLOSE_SECONDS) -> None:
        """Write what the database takes within `budget` seconds; the rest waits in the spool."""
        if not self._thread.is_alive() or self._stop.is_set():
            return
        atexit.unregister(self.close)
        self._deadline = time.monotonic() + budget
        self._stop.set()
        self._thread.join(budget)
        if self._thread.is_alive():  # stuck in a database call: the rows are in the spool
            log.error("Prediction log: the database did not answer within %g s.", budget)
        self._count("dropped", len(self._held))  # neither the spool nor the database took them
        left = 0 if self._spool_failing else self.spool.backlog()[0]
        self.spool.close()
        self.engine.dispose()
        counts = self.counts
        log.log(
            logging.WARNING if left or counts["dropped"] else logging.INFO,
            "Prediction log closed: %d row(s) written, %d left in the spool %s (written at the "
            "next start), %d dropped, %d quarantined.",
            *(counts["written"], left, self.spool.directory),
            *(counts["dropped"], counts["quarantined"]),
        )

    def _run(self) -> None:
        while not self._stop.wait(RETRY_SECONDS if self._failing else LINGER_SECONDS):
            self._step()
        self._step(self._deadline)  # the last round, within the budget of `close`

    def _step(self, deadline: float | None = None) -> None:
        """Rows held in memory to the spool (or the database); then, when this worker leads,
        the spool's rows to the database, oldest first, a batch at a time."""
        try:
            with self._lock:
                held, self._held = self._held, []
            if held:
                self._rescue(held)
            while self.spool.lead() and (rows := self.spool.take(BATCH_ROWS)):
                try:
                    if self._failing:
                        create_tables(self.engine)  # e.g. the table was dropped meanwhile
                    self._write(rows)
                except Exception as exc:  # whatever the database says, the rows wait
                    self._fail(exc)
                    break
                self.spool.remove(rows[-1]["id"])
                if self._failing:
                    log.warning("Prediction log: %s takes rows again.", self.safe_url)
                    self._failing = None
                if len(rows) < BATCH_ROWS or (deadline and time.monotonic() > deadline):
                    break
            waiting, self._waited = self.spool.backlog()
            self._observe("waiting", waiting)
        except (sqlite3.Error, OSError) as exc:  # new rows wait in memory meanwhile
            self._spool_failing = f"the spool cannot be read ({exc})"
        except Exception:  # a bug must not stop the writer: the rows stay where they are
            log.exception("Prediction log: unexpected error; the rows stay in the spool")

    def _rescue(self, rows: list[Row]) -> None:
        """Rows held in memory to the spool or, while it still fails, to the database."""
        try:
            try:
                self.spool.add(rows)
                self._count("spooled", len(rows))
            except (sqlite3.Error, OSError):
                self._write(rows)
        except Exception:
            with self._lock:
                self._held[:0] = rows
            return
        log.warning("Prediction log: %d row(s) held in memory are safe again.", len(rows))

    def _write(self, rows: list[Row]) -> None:
        """INSERT the rows (a SQLite file deleted under the engine is made again); set aside
        those the database refuses for good, so they cannot hold up the rest."""
        self._writing_since = time.monotonic()
        try:
            refused = insert_rows(self.engine, rows)
            if _file_id(self.url) != self._file:
                log.error("Prediction log: %s was deleted; creating it again.", self.safe_url)
                self.engine.dispose()
                create_tables(self.engine)
                self._file = _file_id(self.url)
                refused = insert_rows(self.engine, rows)
        except SQLAlchemyError:
            self.engine.dispose()  # the next try gets new connections
            raise
        finally:
            self._writing_since = None
        self._count("written", len(rows) - len(refused))
        for row, why in refused:
            self.spool.quarantine(row, why)
            self._count("quarantined", 1)

    def _fail(self, exc: Exception) -> None:
        if not self._failing:
            message = "Prediction log: %s does not take rows (%s); they wait in the spool."
            log.error(message, self.safe_url, reason(exc))
        self._failing = reason(exc)

    def _count(self, outcome: str, rows: int) -> None:
        if not rows:
            return
        self.counts[outcome] += rows
        self._observe(outcome, rows)
        if outcome in NOTICED and time.monotonic() - self._noticed > NOTICE_SECONDS:
            self._noticed = time.monotonic()
            count, where = self.counts[outcome], self.spool.directory
            log.error("Prediction log: %d row(s) %s (spool %s).", count, NOTICED[outcome], where)


def _file_id(url: str) -> tuple[int, int] | None:
    """The SQLite file's device and inode ((0, 0) once deleted); None for other databases."""
    if (file := sqlite_file(url)) is None:
        return None
    stat = file.stat() if file.exists() else None
    return (stat.st_dev, stat.st_ino) if stat else (0, 0)
