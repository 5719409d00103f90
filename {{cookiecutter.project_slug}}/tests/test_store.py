"""The prediction log on a real SQLite file: round trip, batching, flushing, concurrent writers."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import {{ cookiecutter.package_name }}
from {{ cookiecutter.package_name }}.log_writer import BATCH_ROWS
from {{ cookiecutter.package_name }}.store import PredictionLog, PredictionLogError, PredictionRecord

SRC = Path({{ cookiecutter.package_name }}.__file__).resolve().parents[1]


def records(n: int, request_id: str = "r", version: str = "1") -> list[PredictionRecord]:
    return [
        PredictionRecord(
            request_id=request_id,
            row_index=i,
            model_version=version,
            features={"age": 40.0 + i, "plan": None if i % 3 else "pro", "visits": i},
            prediction="yes" if i % 2 else "no",
        )
        for i in range(n)
    ]


def count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        rows: int = conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
        return rows


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "log" / "predictions.db"  # the folder does not exist yet


def test_round_trip(db: Path) -> None:
    store = PredictionLog(f"sqlite:///{db}")
    store.start()
    store.log(records(3, version="7"))
    store.close()

    logged = PredictionLog(f"sqlite:///{db}").read_latest(10)

    assert list(logged.columns[:3]) == ["created_at", "model_version", "prediction"]
    assert set(logged.columns[3:]) == {"age", "plan", "visits"}
    assert logged["prediction"].tolist() == ["no", "yes", "no"]
    assert logged["age"].tolist() == [40.0, 41.0, 42.0]
    assert logged["plan"].tolist() == ["pro", None, None]
    assert (logged["model_version"] == "7").all()
    assert str(logged["created_at"].dt.tz) == "UTC"


def test_read_latest_is_the_newest_rows_oldest_first(db: Path) -> None:
    store = PredictionLog(f"sqlite:///{db}")
    store.start()
    for i in range(5):
        store.log(records(1, request_id=f"r{i}", version=str(i)))
    store.close()

    logged = store.read_latest(2)

    assert logged["model_version"].tolist() == ["3", "4"]


def test_read_latest_without_a_table_is_empty(db: Path) -> None:
    logged = PredictionLog(f"sqlite:///{db}").read_latest(10)

    assert logged.empty
    assert list(logged.columns) == ["created_at", "model_version", "prediction"]


def test_sqlite_runs_in_wal_mode(db: Path) -> None:
    store = PredictionLog(f"sqlite:///{db}")
    store.start()
    store.close()

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_close_writes_everything_queued(db: Path) -> None:
    store = PredictionLog(f"sqlite:///{db}")
    store.start()
    for i in range(2 * BATCH_ROWS + 7):
        store.log(records(1, request_id=str(i)))
    store.close()

    assert count(db) == 2 * BATCH_ROWS + 7


def test_numpy_values_and_nan_are_stored_as_plain_json(db: Path) -> None:
    store = PredictionLog(f"sqlite:///{db}")
    store.start()
    features = {"a": np.int64(3), "b": np.float32(0.5), "c": float("nan")}
    store.log([PredictionRecord("r", 0, "1", features, np.float64(2.5))])
    store.close()

    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT features, prediction FROM predictions").fetchone()
    assert row == ('{"a":3,"b":0.5,"c":null}', "2.5")


def test_threads_writing_at_once_lose_nothing(db: Path) -> None:
    store = PredictionLog(f"sqlite:///{db}")
    store.start()

    def client(name: int) -> None:
        for i in range(50):
            store.log(records(4, request_id=f"{name}-{i}"))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()

    assert count(db) == 8 * 50 * 4


WRITER = """
import sys, threading
from {{ cookiecutter.package_name }}.store import PredictionLog, PredictionRecord
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


def test_processes_writing_at_once_lose_nothing(db: Path) -> None:
    """Like several uvicorn workers: each process has its own writer on the same file."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    url = f"sqlite:///{db}"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, str(p)], env=env) for p in range(3)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]

    logged = PredictionLog(url).read_latest(10_000)
    assert len(logged) == 3 * 3 * 100
    with sqlite3.connect(db) as conn:
        ids = conn.execute("SELECT COUNT(DISTINCT request_id) FROM predictions").fetchone()[0]
    assert ids == 3 * 3 * 100


def test_a_log_that_cannot_be_opened_says_what_to_check(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")

    with pytest.raises(PredictionLogError, match="prediction_log_url"):
        PredictionLog(f"sqlite:///{blocker}/predictions.db").start()


def test_a_missing_database_driver_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed

    with pytest.raises(PredictionLogError, match="psycopg"):
        PredictionLog("postgresql+psycopg://user:secret@localhost/db").start()


def test_log_before_start_is_reported_not_raised(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    PredictionLog(f"sqlite:///{db}").log(records(2))

    assert "2 prediction(s) not logged" in caplog.text


def test_read_latest_is_a_dataframe_for_the_monitor(db: Path) -> None:
    store = PredictionLog(f"sqlite:///{db}")
    store.start()
    store.log(records(4))
    store.close()

    logged = store.read_latest(3)

    assert isinstance(logged, pd.DataFrame)
    assert len(logged) == 3
    assert pd.api.types.is_numeric_dtype(logged["age"])
