"""The prediction log's writer thread: rows from the spool (journal.py) to the database.

It knows nothing of SQL: `insert` writes rows and says how many were new, `prepare` (re)creates
the table. Any exception of theirs means the database did not take the rows: they stay in the
spool, the writer tries again every RECONNECT_SECONDS, then writes them in the order they were
answered. Rows of workers that are gone are written too, at start and every SWEEP_SECONDS.
While more than QUEUE_ROWS rows wait (requests come faster than the database takes them), the
next ones wait in the spool only and are read back from it: memory stays bounded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic_core import to_json

from .errors import mask_urls
from .journal import Journal, Segment, parse

log = logging.getLogger(__name__)

BATCH_ROWS = 500  # rows per INSERT (executemany)
LINGER_SECONDS = 0.2  # how long the writer waits for more rows before an INSERT
QUEUE_ROWS = 10 * BATCH_ROWS  # rows kept in memory for the writer; the spool holds them all
RECONNECT_SECONDS = 1.0  # while the database fails, it is tried again this often
SWEEP_SECONDS = 10.0  # how often the spool is searched for rows of stopped workers
STALL_SECONDS = 5.0  # an INSERT taking longer makes the log "degraded" (a frozen server)

Rows = list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Entry:
    """A request's rows in the queue, and the spool segment that holds them (None: the spool
    could not take them)."""

    segment: Segment | None
    count: int
    rows: Rows | None  # None: only in the segment, `size` bytes from `offset`
    offset: int = 0
    size: int = 0

    def read(self) -> Rows:
        if self.rows is not None:
            return self.rows
        assert self.segment is not None
        lines = self.segment.read_range(self.offset, self.size)
        return [parsed(row) for row in parse(lines, self.segment)]


class Writer:
    def __init__(
        self,
        journal: Journal,
        insert: Callable[[Rows], int],
        prepare: Callable[[], None],
        database: str,  # for messages: the URL without its password
        observe: Callable[[str, int], None],
    ) -> None:
        self.journal, self.database = journal, database
        self.counts: Counter[str] = Counter()  # rows: written, spooled, replayed, dropped
        self._insert, self._prepare, self._observe = insert, prepare, observe
        self._queue: queue.SimpleQueue[Entry | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._drain, name="prediction-log", daemon=True)
        self._failing: str | None = None  # why the database does not take rows, while it does not
        self._writing_since: float | None = None  # when the INSERT under way started
        self._spool_failing: str | None = None  # why the spool refuses rows, while it does
        self._drops_logged_at = 0.0
        self._in_memory = 0  # rows of the queue held in memory
        self._lock = threading.Lock()

    @property
    def degraded(self) -> str | None:
        """Why rows are not reaching the database now (they wait in the spool), or None."""
        started = self._writing_since
        if started is not None and time.monotonic() - started > STALL_SECONDS:
            return f"the database has not answered for {STALL_SECONDS:g} s"
        return self._failing or self._spool_failing

    def start(self, failure: Exception | None = None) -> None:
        """Start the thread; with `failure` (the database is down), retrying at once."""
        if failure is not None:
            self.fail(failure)
        self._thread.start()

    def submit(self, rows: Rows) -> None:
        """Append `rows` to the spool and queue them: called on the request path."""
        lines = b"".join(line(row) for row in rows)
        segment, offset = None, 0
        try:
            segment, offset = self.journal.append(lines, len(rows))
        except OSError as exc:  # the database may still take them: only then are they safe
            if not self._spool_failing:
                spool = self.journal.directory
                log.error("Prediction log: cannot write to the spool %s: %s", spool, exc)
            self._spool_failing = f"the spool cannot be written ({exc.strerror or exc})"
        else:
            if self._spool_failing:
                log.warning("Prediction log: the spool takes rows again.")
                self._spool_failing = None
        with self._lock:
            keep = segment is None or self._in_memory < QUEUE_ROWS
            self._in_memory += len(rows) if keep else 0
        self._observe("queued", len(rows))
        self._queue.put(Entry(segment, len(rows), rows if keep else None, offset, len(lines)))

    def stop(self, budget: float) -> tuple[bool, int]:
        """Write what the database takes within `budget` seconds. Returns whether the thread
        has stopped, and how many rows stay in the spool for the next start."""
        self._queue.put(None)
        self._thread.join(budget)
        if self._thread.is_alive():  # stuck in a database call: its rows are in the spool
            log.error("Prediction log: the database did not answer within %g s.", budget)
        return not self._thread.is_alive(), self.journal.release()

    def fail(self, exc: Exception) -> None:
        reason = mask_urls(str(getattr(exc, "orig", None) or exc))
        if not self._failing:
            log.error(
                "Prediction log: %s does not take rows (%s); they are kept in the spool %s "
                "and written once it does (retried every %g s).",
                self.database,
                reason,
                self.journal.directory,
                RECONNECT_SECONDS,
            )
        self._failing = reason

    def _drain(self) -> None:
        self._replay()
        last_replay = time.monotonic()
        stopping = False
        while not stopping:
            due = last_replay + (RECONNECT_SECONDS if self._failing else SWEEP_SECONDS)
            try:
                entries, stopping = self._next_batch(max(due - time.monotonic(), 0.001))
                if entries:
                    self._write(entries)
                if time.monotonic() >= due or (stopping and self._failing):
                    self._replay()
                    last_replay = time.monotonic()
            except Exception:  # a bug must not stop the writer: the rows are in the spool
                log.exception("Prediction log: unexpected error; the rows stay in the spool")

    def _next_batch(self, wait: float) -> tuple[list[Entry], bool]:
        """Up to BATCH_ROWS queued rows, and whether to stop. One INSERT for many requests, as
        commits are costly: when the queue is short, more requests get LINGER_SECONDS to come."""
        try:
            item = self._queue.get(timeout=wait)
        except queue.Empty:
            return [], False
        if item is not None and self._queue.empty():
            time.sleep(LINGER_SECONDS)
        entries: list[Entry] = []
        rows = 0
        while item is not None:
            entries.append(item)
            rows += item.count
            if rows >= BATCH_ROWS:
                return entries, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return entries, False
        return entries, True

    def _write(self, entries: list[Entry]) -> None:
        """Insert the rows; while the database fails, they stay in the spool (or, if the
        spool did not take them either, are dropped, counted and logged)."""
        # Rows of a segment handed over are written from its file (`_replay`), not from here.
        live = [e for e in entries if e.segment is None or not e.segment.handed_over]
        with self._lock:
            self._in_memory -= sum(len(e.rows) for e in entries if e.rows is not None)
        self._observe("dequeued", _rows(entries))
        self._count("spooled", _rows(entries) - _rows(live))
        if not self._failing:
            rows = [row for entry in live for row in entry.read()]
            try:
                self._timed_insert(rows)
            except Exception as exc:  # whatever the database says, the rows wait
                self.fail(exc)
            else:
                self._count("written", _rows(live))
                for entry in live:
                    if entry.segment is not None:
                        self.journal.committed(entry.segment, entry.count)
                return
        spooled = _rows([e for e in live if e.segment is not None])
        self._count("spooled", spooled)
        if dropped := _rows(live) - spooled:
            self._count("dropped", dropped)
            if time.monotonic() - self._drops_logged_at > SWEEP_SECONDS:  # not one line a batch
                self._drops_logged_at = time.monotonic()
                log.error(
                    "Prediction log: row(s) dropped: neither the database nor the spool %s "
                    "takes them (%d dropped in all).",
                    self.journal.directory,
                    self.counts["dropped"],
                )

    def _replay(self) -> None:
        """Write the spooled rows nobody holds, oldest first: those of workers that are gone
        and, while the database fails, this worker's (handed over first)."""
        if self._failing:
            self.journal.hand_over()
        replayed = 0
        segments: list[Segment] = []
        try:
            if self._failing:
                self._prepare()
            segments = self.journal.claim()
            for segment in segments:
                lines = segment.read()
                for start in range(0, len(lines), BATCH_ROWS):  # parsed a batch at a time
                    chunk = parse(lines[start : start + BATCH_ROWS], segment)
                    # rows written already (before a crash) are skipped by the database
                    replayed += self._timed_insert([parsed(row) for row in chunk])
                self.journal.discard(segment)
        except Exception as exc:  # whatever the database says, the rows wait
            self.fail(exc)
            return
        finally:
            self.journal.unclaim(segments)
            self._count("replayed", replayed)
        if self._failing:
            log.warning(
                "Prediction log: the database takes rows again; %d spooled row(s) replayed.",
                replayed,
            )
            self._failing = None
        elif replayed:
            log.info("Prediction log: %d row(s) left by a stopped worker replayed.", replayed)

    def _timed_insert(self, rows: Rows) -> int:
        if not rows:
            return 0
        self._writing_since = time.monotonic()
        try:
            return self._insert(rows)
        finally:
            self._writing_since = None

    def _count(self, outcome: str, rows: int) -> None:
        if rows:
            self.counts[outcome] += rows
            self._observe(outcome, rows)


def _rows(entries: list[Entry]) -> int:
    return sum(entry.count for entry in entries)


def line(row: dict[str, Any]) -> bytes:
    """A row as a spool line: its created_at becomes ISO 8601 text."""
    return to_json(row) + b"\n"


def parsed(row: dict[str, Any]) -> dict[str, Any]:
    """A spool line back as the table's columns."""
    return {**row, "created_at": datetime.fromisoformat(row["created_at"])}
