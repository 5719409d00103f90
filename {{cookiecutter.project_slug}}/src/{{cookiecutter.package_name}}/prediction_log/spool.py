"""The spool: answered rows that the database does not hold yet, in a SQLite file on local disk.

Every worker adds a request's rows in one transaction before the answer is sent (no fsync: a row
survives the process, not a power cut). One worker at a time, the one that locks `drain.lock`,
moves them on; when it stops or is killed, the kernel frees the lock and another one takes over.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .tables import COLUMNS, Row, wal


class Spool:
    """The spool of one worker: one connection, shared by the request path and the writer."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.quarantine_file = directory / "quarantine.jsonl"
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._leading: int | None = None  # the open drain.lock, while this worker leads

    def add(self, rows: list[Row]) -> None:
        """Add rows in one transaction; sqlite3.Error or OSError when the disk refuses them."""
        marks = ", ".join(f":{name}" for name in COLUMNS)
        self._write(f"INSERT INTO rows ({', '.join(COLUMNS)}) VALUES ({marks})", rows)

    def take(self, limit: int) -> list[Row]:
        """The oldest `limit` rows, each with its spool `id`."""
        with self._lock:
            query = "SELECT * FROM rows ORDER BY id LIMIT ?"
            return [dict(row) for row in self._connection().execute(query, (limit,))]

    def remove(self, last_id: int) -> None:
        """The database holds every row up to `last_id` (or they were set aside)."""
        self._write("DELETE FROM rows WHERE id <= ?", [(last_id,)])

    def backlog(self) -> tuple[int, float]:
        """How many rows wait, and for how many seconds the oldest one has."""
        query = "SELECT max(id) - min(id) + 1, (SELECT created_at FROM rows ORDER BY id LIMIT 1)"
        with self._lock:
            count, oldest = self._connection().execute(f"{query} FROM rows").fetchone()
        if oldest is None:
            return 0, 0.0
        return count, (datetime.now(UTC) - datetime.fromisoformat(oldest)).total_seconds()

    def quarantine(self, row: Row, reason: str) -> None:
        """Set aside a row the database refuses for good, with why, for a person to look at."""
        with self.quarantine_file.open("a", encoding="utf-8") as file:
            file.write(json.dumps({"row": row, "reason": reason}, default=str) + "\n")

    def lead(self) -> bool:
        """Whether this worker moves the rows on: once it locks drain.lock, until it stops."""
        if self._leading is None:
            fd = os.open(self.directory / "drain.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._leading = fd
            except BlockingIOError:  # another worker leads
                os.close(fd)
        return self._leading is not None

    def close(self) -> None:
        with self._lock:
            if self._leading is not None:
                os.close(self._leading)  # another worker may lead now
            if self._conn is not None:
                self._conn.close()
            self._conn = self._leading = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.directory / "spool.db", timeout=30, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            wal(conn)
            # No constraints: what a row must hold is the database's to say (`quarantine`).
            columns = ", ".join(COLUMNS)
            conn.execute(f"CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, {columns})")
            self._conn = conn
        return self._conn

    def _write(self, statement: str, values: list[Any]) -> None:
        with self._lock:
            conn = self._connection()
            try:
                with conn:  # one transaction: committed, or rolled back on an error
                    conn.executemany(statement, values)
            except sqlite3.Error:
                conn.close()  # a disk that failed may work again: the next write opens anew
                self._conn = None
                raise
