"""No answered row is lost when the prediction log's database fails: real SQLite faults (a lock
held by another connection, a deleted file, a killed process) against the real spool."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import {{ cookiecutter.package_name }}
from {{ cookiecutter.package_name }}.log_writer import Entry, Writer
from {{ cookiecutter.package_name }}.store import PredictionLog, PredictionRecord

SRC = Path({{ cookiecutter.package_name }}.__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fast_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """A locked database fails after 0.1 s instead of 30 s; retried every 0.1 s."""
    monkeypatch.setattr("{{ cookiecutter.package_name }}.store.SQLITE_BUSY_TIMEOUT_MS", 100)
    monkeypatch.setattr("{{ cookiecutter.package_name }}.log_writer.RECONNECT_SECONDS", 0.1)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "predictions.db"


def rows(n: int, request_id: str) -> list[PredictionRecord]:
    return [PredictionRecord(request_id, i, "1", {"x": i}, i % 2) for i in range(n)]


def logged(db: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(db) as conn:
        query = "SELECT request_id, row_index FROM predictions ORDER BY id"
        return [(r, i) for r, i in conn.execute(query)]


def spooled_lines(store: PredictionLog) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in store.spool_dir.glob("*.jsonl"))


def wait_for(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@contextmanager
def locked(db: Path) -> Iterator[None]:
    """Another connection holds the write lock: every write of the log fails meanwhile."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_rows_wait_in_the_spool_while_the_database_fails_then_arrive_in_order(db: Path) -> None:
    store = PredictionLog(f"sqlite:///{db}")
    store.start()
    store.log(rows(2, "before"))
    wait_for(lambda: len(logged(db)) == 2)

    with locked(db):
        for i in range(5):
            store.log(rows(3, f"during-{i}"))
        wait_for(lambda: store.degraded is not None)
        wait_for(lambda: store.counts["spooled"] == 15)
        assert spooled_lines(store) >= 15
    wait_for(lambda: store.degraded is None)
    store.log(rows(1, "after"))
    store.close()

    expected = [("before", 0), ("before", 1)]
    expected += [(f"during-{i}", j) for i in range(5) for j in range(3)] + [("after", 0)]
    assert logged(db) == expected  # all, once each, in the order they were answered
    assert store.counts["replayed"] == 15
    assert store.counts["dropped"] == 0
    assert spooled_lines(store) == 0


def test_a_deleted_database_file_is_noticed_and_made_again(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = PredictionLog(f"sqlite:///{db}")
    store.start()
    store.log(rows(2, "old"))
    wait_for(lambda: db.exists() and len(logged(db)) == 2)

    for path in db.parent.glob("predictions.db*"):
        if path.is_file():
            path.unlink()
    store.log(rows(3, "new"))
    store.close()

    # The rows written before the delete went with the file (unless they were still in the
    # spool, which may bring them back); every row answered after it is in the new file.
    rows_after = logged(db)
    assert [row for row in rows_after if row[0] == "new"] == [("new", 0), ("new", 1), ("new", 2)]
    assert len(rows_after) == len(set(rows_after))
    assert "was deleted or replaced" in caplog.text or "no such table" in caplog.text


def test_rows_of_a_killed_process_are_replayed_by_the_next_one(db: Path) -> None:
    script = (
        "import os, signal, sqlite3, sys, time\n"
        "from {{ cookiecutter.package_name }}.store import PredictionLog, PredictionRecord\n"
        "store = PredictionLog(sys.argv[1])\n"
        "store.start()\n"
        "lock = sqlite3.connect(sys.argv[2], isolation_level=None)\n"
        "lock.execute('BEGIN EXCLUSIVE')  # nothing reaches the database: all is in the spool\n"
        "store.log([PredictionRecord('killed', i, '1', {'x': i}, 0) for i in range(7)])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    command = [sys.executable, "-c", script, f"sqlite:///{db}", str(db)]
    killed = subprocess.run(command, check=False, env=env, timeout=120)
    assert killed.returncode == -signal.SIGKILL

    store = PredictionLog(f"sqlite:///{db}")
    store.start()
    wait_for(lambda: len(logged(db)) == 7)
    store.close()

    assert logged(db) == [("killed", i) for i in range(7)]
    assert spooled_lines(store) == 0


def test_shutdown_is_bounded_and_the_rest_is_replayed_at_the_next_start(
    db: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("{{ cookiecutter.package_name }}.store.SQLITE_BUSY_TIMEOUT_MS", 30_000)
    store = PredictionLog(f"sqlite:///{db}")
    store.start()
    with locked(db):  # the writer waits on the lock, as on a frozen database server
        store.log(rows(4, "late"))
        started = time.monotonic()
        store.close(budget=0.5)
        assert time.monotonic() - started < 5
    assert "4 left in the spool" in caplog.text

    again = PredictionLog(f"sqlite:///{db}")
    again.start()
    wait_for(lambda: len(logged(db)) == 4)
    again.close()
    assert sorted(logged(db)) == [("late", i) for i in range(4)]


def test_a_row_is_dropped_only_when_the_spool_fails_too_and_is_counted(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = PredictionLog(f"sqlite:///{db}")
    store.start()
    store.spool_dir.rmdir()
    store.spool_dir.write_text("a file where the spool folder was")
    with locked(db):
        store.log(rows(3, "lost"))
        store.log(rows(2, "lost-too"))
        assert store.degraded is not None  # fail_closed answers 503 from now on
        wait_for(lambda: store.counts["dropped"] == 5)
    store.close()

    assert "(5 dropped in all)" in caplog.text or "(3 dropped in all)" in caplog.text
    assert caplog.text.count("cannot write to the spool") == 1  # once, not once a request


def test_rows_beyond_the_queue_bound_wait_in_the_spool_only_and_arrive_in_order(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests faster than the database: memory holds about QUEUE_ROWS rows, the spool all."""
    monkeypatch.setattr("{{ cookiecutter.package_name }}.store.SQLITE_BUSY_TIMEOUT_MS", 30_000)
    monkeypatch.setattr("{{ cookiecutter.package_name }}.log_writer.QUEUE_ROWS", 5)
    store = PredictionLog(f"sqlite:///{db}")
    store.start()
    writer = store._writer  # what it holds in memory is not public: read it here
    with locked(db):  # the writer waits in its first INSERT meanwhile, without failing
        store.log(rows(2, "r00"))
        wait_for(lambda: writer._writing_since is not None)
        for i in range(1, 30):
            store.log(rows(2, f"r{i:02}"))
        held = writer._in_memory
    wait_for(lambda: len(logged(db)) == 60)
    store.close()

    assert held == 6  # 2-row requests kept until 5 rows were held; the rest read back
    assert logged(db) == [(f"r{i:02}", j) for i in range(30) for j in range(2)]
    assert spooled_lines(store) == 0


def test_an_unexpected_error_in_the_writer_is_logged_and_the_writer_goes_on(
    db: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Writer._next_batch
    broken = [True]  # the first batch fails, as a bug would

    def once_broken(self: Writer, wait: float) -> tuple[list[Entry], bool]:
        if broken and broken.pop():
            raise RuntimeError("a bug")
        return real(self, wait)

    monkeypatch.setattr(Writer, "_next_batch", once_broken)
    store = PredictionLog(f"sqlite:///{db}")
    store.start()
    store.log(rows(3, "after"))
    wait_for(lambda: len(logged(db)) == 3)
    store.close()

    assert "unexpected error; the rows stay in the spool" in caplog.text
