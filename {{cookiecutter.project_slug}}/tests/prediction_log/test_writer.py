"""No answered row is lost: the prediction log on real SQLite files, under real faults (a lock
held by another connection, a deleted file, a killed process, a spool that refuses rows)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import {{ cookiecutter.package_name }}
from {{ cookiecutter.package_name }}.prediction_log.spool import Spool
from {{ cookiecutter.package_name }}.prediction_log.tables import PredictionLogError, PredictionRecord
from {{ cookiecutter.package_name }}.prediction_log.writer import BATCH_ROWS, PredictionLog

SRC = Path({{ cookiecutter.package_name }}.__file__).resolve().parents[1]
WRITER = "{{ cookiecutter.package_name }}.prediction_log.writer"


@pytest.fixture(autouse=True)
def fast_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """A locked database fails after 0.1 s instead of 30 s; retried every 0.1 s."""
    monkeypatch.setattr("{{ cookiecutter.package_name }}.prediction_log.tables.SQLITE_BUSY_TIMEOUT_MS", 100)
    monkeypatch.setattr(f"{WRITER}.RETRY_SECONDS", 0.1)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "log" / "predictions.db"  # the folder does not exist yet


def rows(n: int, request_id: str) -> list[PredictionRecord]:
    return [PredictionRecord(request_id, i, "1", {"x": i}, i % 2) for i in range(n)]


def logged(db: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(db) as conn:
        query = "SELECT request_id, row_index FROM predictions ORDER BY id"
        return [(r, i) for r, i in conn.execute(query)]


def spooled(store: PredictionLog) -> int:
    with sqlite3.connect(store.spool.directory / "spool.db") as conn:
        count: int = conn.execute("SELECT count(*) FROM rows").fetchone()[0]
        return count


def wait_for(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def started(db: Path) -> PredictionLog:
    store = PredictionLog(f"sqlite:///{db}")
    store.start()
    return store


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


def test_every_row_arrives_once_with_plain_json(db: Path) -> None:
    store = started(db)
    features = {"a": np.int64(3), "b": np.float32(0.5), "c": float("nan")}
    store.log([PredictionRecord("r", 0, "1", features, np.float64(2.5))])
    for i in range(2 * BATCH_ROWS + 6):
        store.log(rows(1, str(i)))
    store.close()

    with sqlite3.connect(db) as conn:
        first = conn.execute("SELECT features, prediction, traffic FROM predictions").fetchone()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert first == ('{"a":3,"b":0.5,"c":null}', "2.5", "live")
    assert len(logged(db)) == 2 * BATCH_ROWS + 7
    assert spooled(store) == 0


def test_threads_writing_at_once_lose_nothing(db: Path) -> None:
    store = started(db)

    def client(name: int) -> None:
        for i in range(50):
            store.log(rows(4, f"{name}-{i}"))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()

    assert len(set(logged(db))) == len(logged(db)) == 8 * 50 * 4


PROCESS = """
import sys, threading
from {{ cookiecutter.package_name }}.prediction_log.tables import PredictionRecord
from {{ cookiecutter.package_name }}.prediction_log.writer import PredictionLog
store = PredictionLog(sys.argv[1])
store.start()
def client(t):
    for i in range(100):
        store.log([PredictionRecord(f"{sys.argv[2]}-{t}-{i}", 0, "1", {"x": i}, i)])
threads = [threading.Thread(target=client, args=(t,)) for t in range(3)]
for t in threads: t.start()
for t in threads: t.join()
store.close()
"""


def test_processes_sharing_a_spool_lose_nothing(db: Path) -> None:
    """Like several uvicorn workers: one spool, one writer at a time moving it on."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    writers = [
        subprocess.Popen([sys.executable, "-c", PROCESS, f"sqlite:///{db}", str(p)], env=env)
        for p in range(3)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    again = started(db)  # what the last one to stop left in the spool, if anything
    wait_for(lambda: len(logged(db)) == 3 * 3 * 100)
    again.close()

    assert len(set(logged(db))) == 3 * 3 * 100


def test_rows_wait_in_the_spool_while_the_database_fails_then_arrive_in_order(db: Path) -> None:
    store = started(db)
    store.log(rows(2, "before"))
    wait_for(lambda: len(logged(db)) == 2)

    with locked(db):
        for i in range(5):
            store.log(rows(3, f"during-{i}"))
        wait_for(lambda: store.degraded is not None)
        assert spooled(store) == 15
    wait_for(lambda: store.degraded is None)
    store.log(rows(1, "after"))
    store.close()

    expected = [("before", 0), ("before", 1)]
    expected += [(f"during-{i}", j) for i in range(5) for j in range(3)] + [("after", 0)]
    assert logged(db) == expected  # all, once each, in the order they were answered
    assert store.counts["written"] == 18
    assert spooled(store) == 0


def test_a_stalled_database_makes_the_log_degraded_within_seconds(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("{{ cookiecutter.package_name }}.prediction_log.tables.SQLITE_BUSY_TIMEOUT_MS", 30_000)
    store = started(db)
    with locked(db):  # the writer waits in its INSERT, as on a frozen database server
        store.log(rows(1, "stalled"))
        began = time.monotonic()
        wait_for(lambda: store.degraded is not None)
        assert time.monotonic() - began < 4
    wait_for(lambda: store.degraded is None)
    store.close()


def test_a_dropped_table_is_made_again(db: Path) -> None:
    store = started(db)
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE predictions")
    store.log(rows(2, "after-drop"))
    wait_for(lambda: db.exists() and spooled(store) == 0, seconds=10)
    store.close()

    assert logged(db) == [("after-drop", 0), ("after-drop", 1)]


def test_a_deleted_database_file_is_noticed_and_made_again(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = started(db)
    store.log(rows(2, "old"))
    wait_for(lambda: len(logged(db)) == 2)

    for path in db.parent.glob("predictions.db*"):
        if path.is_file():
            path.unlink()
    store.log(rows(3, "new"))
    store.close()

    assert logged(db) == [("new", 0), ("new", 1), ("new", 2)]
    assert "was deleted; creating it again" in caplog.text


def test_rows_of_a_killed_process_are_written_by_the_next_one(db: Path) -> None:
    script = (
        "import os, signal, sqlite3, sys\n"
        "from {{ cookiecutter.package_name }}.prediction_log.tables import PredictionRecord\n"
        "from {{ cookiecutter.package_name }}.prediction_log.writer import PredictionLog\n"
        "store = PredictionLog(sys.argv[1])\n"
        "store.start()\n"
        "lock = sqlite3.connect(sys.argv[2], isolation_level=None)\n"
        "lock.execute('BEGIN EXCLUSIVE')  # nothing reaches the database: all is in the spool\n"
        "store.log([PredictionRecord('killed', i, '1', {'x': i}, 0) for i in range(7)])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    db.parent.mkdir()
    sqlite3.connect(db).close()
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    command = [sys.executable, "-c", script, f"sqlite:///{db}", str(db)]
    assert subprocess.run(command, check=False, env=env, timeout=120).returncode == -signal.SIGKILL

    store = started(db)
    wait_for(lambda: len(logged(db)) == 7)
    store.close()

    assert logged(db) == [("killed", i) for i in range(7)]
    assert spooled(store) == 0


def test_shutdown_is_bounded_and_the_rest_is_written_at_the_next_start(
    db: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("{{ cookiecutter.package_name }}.prediction_log.tables.SQLITE_BUSY_TIMEOUT_MS", 30_000)
    store = started(db)
    with locked(db):  # the writer waits on the lock, as on a frozen database server
        store.log(rows(4, "late"))
        began = time.monotonic()
        store.close(budget=0.5)
        assert time.monotonic() - began < 5
    assert "4 left in the spool" in caplog.text

    again = started(db)
    wait_for(lambda: len(logged(db)) == 4)
    again.close()
    assert logged(db) == [("late", i) for i in range(4)]


@contextmanager
def refusing(store: PredictionLog) -> Iterator[None]:
    """The spool refuses every row, as a full or read-only disk does."""
    real = store.spool.add

    def refuse(rows: object) -> None:
        raise sqlite3.OperationalError("attempt to write a readonly database")

    store.spool.add = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        store.spool.add = real  # type: ignore[method-assign]


def test_rows_the_spool_refuses_wait_in_memory_and_are_written(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = started(db)
    with refusing(store), locked(db):  # neither the spool nor the database takes them
        store.log(rows(3, "held"))
        store.log(rows(2, "held-too"))
        assert store.degraded is not None  # fail_closed answers 503 from now on
        time.sleep(0.5)
    wait_for(lambda: len(logged(db)) == 5)
    store.close()

    assert sorted(logged(db)) == [("held", 0), ("held", 1), ("held", 2), ("held-too", 0),
                                  ("held-too", 1)]  # fmt: skip
    assert store.counts["held"] == 5
    assert store.counts["dropped"] == 0
    assert caplog.text.count("refuses rows") == 1  # once, not once a request


def test_rows_beyond_the_memory_bound_are_dropped_counted_and_logged(
    db: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(f"{WRITER}.MEMORY_ROWS", 4)
    store = started(db)
    with refusing(store), locked(db):
        store.log(rows(3, "kept"))
        store.log(rows(3, "partly"))
    store.close()

    assert store.counts["held"] == 4
    assert store.counts["dropped"] == 2
    assert "2 row(s) dropped in all" in caplog.text
    assert len(logged(db)) == 4


def test_a_row_the_database_refuses_is_set_aside_and_the_rest_flow_on(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = started(db)
    with locked(db):  # a bad row in the spool, among good ones (a damaged or hand-edited spool)
        store.log(rows(2, "before"))
        with sqlite3.connect(store.spool.directory / "spool.db") as conn:
            conn.execute("INSERT INTO rows (created_at, request_id) VALUES ('2026-01-01', 'bad')")
        store.log(rows(1_500, "after"))
    wait_for(lambda: len(logged(db)) == 1_502)
    store.close()

    assert [row for row in logged(db) if row[0] == "bad"] == []
    assert spooled(store) == 0
    quarantined = [json.loads(line) for line in store.spool.quarantine_file.open()]
    assert [item["row"]["request_id"] for item in quarantined] == ["bad"]
    assert store.counts["quarantined"] == 1
    assert caplog.text.count("set aside") == 1


def test_an_unexpected_error_in_the_writer_is_logged_and_the_writer_goes_on(
    db: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = [True]  # the first round fails, as a bug would
    real = Spool.lead

    def once_broken(self: Spool) -> bool:
        if broken and broken.pop():
            raise RuntimeError("a bug")
        return real(self)

    monkeypatch.setattr(Spool, "lead", once_broken)
    store = started(db)
    store.log(rows(3, "after"))
    wait_for(lambda: len(logged(db)) == 3)
    store.close()

    assert "unexpected error; the rows stay in the spool" in caplog.text


def test_a_log_that_cannot_be_opened_says_what_to_check(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")

    with pytest.raises(PredictionLogError, match=r"Check prediction_log in config\.yaml"):
        PredictionLog(f"sqlite:///{blocker}/predictions.db").start()


def test_a_missing_database_driver_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed

    with pytest.raises(PredictionLogError, match="psycopg"):
        PredictionLog("postgresql+psycopg://user:secret@localhost/db", tmp_path).start()


def test_log_before_start_is_reported_not_raised(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    PredictionLog(f"sqlite:///{db}").log(rows(2, "early"))

    assert "2 prediction(s) not logged" in caplog.text
