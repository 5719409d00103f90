"""The PostgreSQL test server does what fault tests rely on: password, outage, hang, clean-up."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pgserver import USER, PostgresServer, postgres_server


def query(server: PostgresServer, database: str, sql: str, password: str | None = None) -> str:
    """Run SQL over TCP with psql; raise on refusal, hang (timeout) or a wrong password."""
    env = {**os.environ, "PGPASSWORD": password or server.password, "PGCONNECT_TIMEOUT": "2"}
    return subprocess.run(
        [str(server.bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(server.port), "-U", USER,
         "-d", database, "-qtAc", sql],
        capture_output=True, text=True, env=env, timeout=5, check=True,
    ).stdout.strip()  # fmt: skip


def fails(server: PostgresServer, **kwargs: str) -> bool:
    try:
        query(server, "app", "select 1", **kwargs)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return True
    return False


def test_server_lifecycle_and_faults() -> None:
    with postgres_server("app") as server:
        assert server.url("app") == (
            f"postgresql+psycopg://{USER}:{server.password}@127.0.0.1:{server.port}/app"
        )
        assert server.sql("app", "create table t (x int); insert into t values (1); "
                          "select count(*) from t") == "1"  # fmt: skip
        assert fails(server, password="wrong")

        server.freeze()
        assert fails(server)  # hangs rather than refuses
        server.thaw()
        assert query(server, "app", "select count(*) from t") == "1"

        server.stop()
        assert server.pids() == []
        assert fails(server)
        server.start()
        assert query(server, "app", "select count(*) from t") == "1"  # data survives a restart

        server.freeze()  # left frozen on purpose: close() must still stop and remove it
        root, pids = server.root, server.pids()
    assert not root.exists()
    assert not [pid for pid in pids if alive(pid)]


def alive(pid: int) -> bool:
    """Running or stopped, not gone nor a zombie waiting for init to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
