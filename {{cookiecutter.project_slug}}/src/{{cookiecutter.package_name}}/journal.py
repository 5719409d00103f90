"""The prediction log's journal (spool): every answered row is on local disk until the database
holds it, so a database that is down, full, frozen or deleted, or a worker that is killed, loses
no prediction.

A request's rows are appended to the worker's current segment file (one write, no fsync: it
survives the process, not a power cut) before the answer is sent. The writer thread deletes a
segment once the database holds all its rows. A worker holds an exclusive lock (flock) on each
of its segments; it unlocks them when the database fails (`hand_over`) or when it stops, and the
kernel does when it is killed. Any worker replays, in order, the segments nobody holds (`claim`),
and deletes each once the database has its rows. Replaying a row twice is harmless: the database
skips a row it already has (request id + row index + model role are unique).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_core import from_json

log = logging.getLogger(__name__)

SEGMENT_ROWS = 10_000  # rows per segment file before the next one is started
SUFFIX = ".jsonl"


@dataclass(eq=False)
class Segment:
    """One journal file: its rows in the order they were answered, one JSON object per line."""

    path: Path
    fd: int  # open and locked while this worker may still need it
    rows: int = 0  # appended
    size: int = 0  # bytes appended
    committed: int = 0  # rows the database holds
    closed: bool = False  # full: the next rows go to a new segment
    handed_over: bool = False  # unlocked (replayed, deleted or left): its queued rows are skipped

    def read(self) -> list[bytes]:
        """Its lines (one row each); `parse` makes them rows."""
        return self.path.read_bytes().splitlines()

    def read_range(self, offset: int, size: int) -> list[bytes]:
        """The lines of one `append`: `size` bytes from `offset`."""
        with self.path.open("rb") as file:
            file.seek(offset)
            return file.read(size).splitlines()


class Journal:
    """The segments of one worker in `directory`, shared by the request path and the writer."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._segments: list[Segment] = []  # this worker's, oldest first
        self._handed: list[Segment] = []  # this worker's, handed over (until the next start)
        self._lock = threading.Lock()

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def append(self, lines: bytes, rows: int) -> tuple[Segment, int]:
        """Append `rows` rows (JSON lines) to the current segment and return it with the offset
        they start at; raise OSError when the disk refuses them (full, read-only), leaving the
        segment as it was."""
        with self._lock:
            current = self._segments[-1] if self._segments else None
            if current is None or current.closed or current.handed_over:
                current = self._new_segment()
            try:
                written = os.write(current.fd, lines)
                if written != len(lines):
                    raise OSError(f"{current.path.name}: short write ({written} bytes)")
            except OSError:
                os.ftruncate(current.fd, current.size)  # no half line left behind
                raise
            offset = current.size
            current.rows += rows
            current.size += len(lines)
            if current.rows >= SEGMENT_ROWS:
                current.closed = True
            return current, offset

    def committed(self, segment: Segment, rows: int) -> None:
        """The database holds `rows` more rows of `segment`: a closed segment held whole goes."""
        with self._lock:
            segment.committed += rows
            if segment.closed and segment.committed >= segment.rows and not segment.handed_over:
                self._delete(segment)

    def hand_over(self) -> None:
        """While the database fails: unlock this worker's segments, so that they are replayed
        like those of a gone worker (by `claim`, here or in another worker), and start a new one
        for the next rows. Their rows still queued are skipped (`handed_over`)."""
        with self._lock:
            self._unlock(self._segments)
            self._handed.extend(self._segments)
            self._segments.clear()

    def claim(self) -> list[Segment]:
        """The segments nobody holds, oldest first, locked for this worker: replay each, then
        `discard` it, or `unclaim` what is left."""
        found = (_claim(path) for path in sorted(self.directory.glob(f"*{SUFFIX}")))
        return [segment for segment in found if segment is not None]

    def discard(self, segment: Segment) -> None:
        """`segment` was replayed: delete it."""
        with self._lock:
            self._delete(segment)

    def unclaim(self, segments: list[Segment]) -> None:
        self._unlock([segment for segment in segments if not segment.handed_over])

    def release(self) -> int:
        """Stop: delete the segments the database holds whole, unlock the rest (replayed at the
        next start, or by another worker). Returns this worker's rows left on disk."""
        with self._lock:
            done = [s for s in self._segments if s.committed >= s.rows]
            for segment in done:
                self._delete(segment)
            left = sum(s.rows - s.committed for s in self._segments)
            left += sum(s.rows - s.committed for s in self._handed if s.path.exists())
            self._unlock(self._segments)
            self._segments.clear()
            return left

    def _new_segment(self) -> Segment:
        # Names sort by time, so replaying in name order is replaying in answer order. The file
        # is locked before it gets its name: no other worker can take it for a gone worker's.
        path = self.directory / f"{time.time_ns():020d}-{os.getpid()}{SUFFIX}"
        hidden = path.with_suffix(".new")
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            hidden.rename(path)
        except OSError:
            os.close(fd)
            hidden.unlink(missing_ok=True)
            raise
        segment = Segment(path, fd)
        self._segments.append(segment)
        return segment

    def _delete(self, segment: Segment) -> None:
        """Unlink before unlocking: nobody can claim a segment that is being deleted."""
        segment.path.unlink(missing_ok=True)
        self._unlock([segment])
        if segment in self._segments:
            self._segments.remove(segment)

    @staticmethod
    def _unlock(segments: list[Segment]) -> None:
        for segment in segments:
            os.close(segment.fd)
            segment.handed_over = True


def _claim(path: Path) -> Segment | None:
    """Lock a segment nobody holds, or None (its worker lives, or it is gone already)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if os.fstat(fd).st_nlink == 0:  # replayed and deleted by another worker meanwhile
        os.close(fd)
        return None
    return Segment(path, fd, closed=True)


def parse(lines: list[bytes], segment: Segment) -> list[dict[str, Any]]:
    """Lines of `segment` as rows; a line cut short by a crash is skipped with a warning."""
    rows: list[dict[str, Any]] = []
    for line in lines:
        try:
            rows.append(from_json(line))
        except ValueError:
            log.warning("Prediction log: skipped a damaged line in %s.", segment.path.name)
    return rows
