"""A real PostgreSQL server for the template tests, started and removed by the test itself.

`postgres_server()` runs `initdb` in a fresh temporary directory, starts the server on a free
port of 127.0.0.1 with password authentication, creates a database and yields a handle with its
SQLAlchemy URL and the faults a test needs: stop/start (a clean outage and recovery) and
freeze/thaw (SIGSTOP/SIGCONT of the postmaster and its backends: a server that hangs instead of
refusing). The server never outlives the `with` block. Stdlib only, Linux only (/proc).

PostgreSQL refuses to run as root: as root the server binaries run as the `postgres` user
(`runuser -u postgres --`) in a directory that user owns; as anyone else they run as that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "mle"  # the superuser initdb creates; its password is random per server
SERVER_TOOLS = ("initdb", "pg_ctl", "createdb", "psql")


def _bin_dir() -> Path:
    """Folder of the server binaries: from PATH, else Debian/Ubuntu's /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        return Path(on_path).resolve().parent
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    if not found:
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under "
            "/usr/lib/postgresql/*/bin: install PostgreSQL (`.ci/run` does on CI)"
        )
    return found[-1].parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One running server in its own data directory; see the module docstring."""

    def __init__(self, root: Path, bin_dir: Path, as_postgres: list[str]) -> None:
        self.root, self.bin_dir, self._as = root, bin_dir, as_postgres
        self.data, self.log = root / "data", root / "server.log"
        self.password = secrets.token_urlsafe(16)
        self.port = _free_port()

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        """SQLAlchemy URL of a database on this server, password included."""
        return f"{driver}://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "10", "LC_ALL": "C"}
        command = [*self._as, str(self.bin_dir / tool), *args]
        result = subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=self.root, check=False
        )
        if check and result.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            pytest.fail(
                f"`{' '.join(command)}` exited {result.returncode}:\n"
                f"{result.stdout}{result.stderr}\nserver log:\n{log}"
            )
        return result

    def init(self) -> None:
        """initdb with a password for USER (scram over TCP); the socket stays in our directory."""
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._own(pwfile)
        self._run(
            "initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256", "--auth-local=trust", "--encoding=UTF8", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",  # a test server: only an OS crash would need it
            "full_page_writes": "off",
            "max_connections": "50",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def start(self) -> None:
        """Start (or restart after stop()) and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self) -> None:
        """A clean outage: fast shutdown (open connections are cut), until start() again."""
        self.thaw()
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def create_database(self, name: str) -> str:
        """Create a database owned by USER; return its SQLAlchemy URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name)
        return self.url(name)

    def sql(self, database: str, statement: str) -> str:
        """Run SQL with psql over TCP (the tests' own Python has no PostgreSQL driver); its
        unaligned output without headers, e.g. "42" for `SELECT count(*) ...`."""
        return self._run(
            "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", database,
            "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", statement,
        ).stdout.strip()  # fmt: skip

    def pids(self) -> list[int]:
        """The postmaster first, then its children (backends, checkpointer, ...); [] if down."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return []
        postmaster = int(pid_file.read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(stat.parent.name))
        return [postmaster, *children]

    def freeze(self) -> None:
        """SIGSTOP the server: connections hang (no refusal) until thaw()."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT what freeze() stopped, children before the postmaster."""
        for pid in reversed(self.pids()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop the server whatever its state, kill what is left, remove its directory."""
        self.thaw()
        if (self.data / "postmaster.pid").exists():
            stopped = self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t",
                                "20", "stop", check=False)  # fmt: skip
            if stopped.returncode != 0:
                for pid in self.pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)

    def _own(self, path: Path) -> None:
        if self._as:
            account = pwd.getpwnam("postgres")
            os.chown(path, account.pw_uid, account.pw_gid)


def _as_postgres() -> list[str]:
    """How to run the server binaries: as `postgres` when we are root, else as ourselves."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root and there is no `postgres` user to run PostgreSQL as")
    if shutil.which("runuser") is None:
        pytest.fail("running as root and `runuser` is missing: cannot run PostgreSQL as postgres")
    return ["runuser", "-u", "postgres", "--"]


@contextlib.contextmanager
def postgres_server(database: str = "app", attempts: int = 3) -> Iterator[PostgresServer]:
    """A running server with `database` created (its URL: `server.url(database)`).

    A port taken between choosing and binding it (tests run in parallel) is retried.
    """
    bin_dir, as_postgres = _bin_dir(), _as_postgres()
    for tool in SERVER_TOOLS:
        if not (bin_dir / tool).exists():
            pytest.fail(f"{bin_dir / tool} is missing: install the PostgreSQL server package")
    # Right under /tmp, not in pytest's tmp_path (nor the tests' patched tempfile.tempdir):
    # the postgres user must be able to reach the directory.
    root = Path(tempfile.mkdtemp(prefix="pgserver-", dir="/tmp"))
    server = PostgresServer(root, bin_dir, as_postgres)
    try:
        server._own(root)
        server.init()
        for attempt in range(attempts):
            started = server._run(
                "pg_ctl", "-D", str(server.data), "-l", str(server.log), "-w", "-t", "60", "start",
                check=attempt == attempts - 1,
            )  # fmt: skip
            if started.returncode == 0:
                break
            server.port = _free_port()
            with (server.data / "postgresql.conf").open("a") as conf:
                conf.write(f"port = {server.port}\n")
        server.create_database(database)
        yield server
    finally:
        server.close()
