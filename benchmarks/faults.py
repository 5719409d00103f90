"""Fault table of the prediction log (`make faults`): answered-200 vs logged under real faults.

Each line starts the trained service (2 workers) on a fresh prediction log, sends one-row
requests from 4 connections, injects one fault mid-load, recovers, stops the service with
SIGTERM (and starts it once more when rows are left in the spool, as an operator would), then
checks that every answered request id is in the log. Faults: SQLite files made read-only
(chattr +i) and the disk full (a tmpfs), root only, skipped otherwise; the SQLite files deleted;
PostgreSQL stopped and restarted, frozen during SIGTERM, down at start; one worker SIGKILLed.
PostgreSQL runs from tests/pgserver.py. Exit status 1 when a row is lost or duplicated.

    python benchmarks/faults.py                       # bake, install, train, then the faults
    python benchmarks/faults.py --project DIR --venv V --quick
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import project as proj
from procs import StepError, free_port, service

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from pgserver import PostgresServer, postgres_server  # noqa: E402

log = logging.getLogger("bench")
Target = tuple[str, Path, Path | str]  # log URL, spool folder, SQLite file or PostgreSQL database
CONNECTIONS = 4
ROWS_METRIC = re.compile(r'^prediction_log_rows_total\{outcome="(\w+)"\} ([0-9.e+]+)$', re.M)


@dataclass
class Line:
    fault: str
    answered: int = 0  # 200s whose rows must be in the log
    logged: int = 0  # of those
    other: int = 0  # non-200 answers (503 of fail_closed, refused connections)
    ready: str = ""  # /ready while the fault lasts
    stop_seconds: float = 0.0
    restarted: bool = False  # a second start wrote what the first left in the spool
    counts: dict[str, int] = field(default_factory=dict)  # prediction_log_rows_total
    skipped: str = ""

    spooled: int = 0  # of the others: still in the spool (the database never took them back)

    @property
    def lost(self) -> int:
        return self.answered - self.logged - self.spooled


class Load:
    """One-row POST /predict from CONNECTIONS threads until stopped; keeps each 200's request id
    and when its request was sent."""

    def __init__(self, port: int, rows: list[dict[str, Any]]) -> None:
        self.port, self.rows = port, rows
        self.answered: list[tuple[float, str]] = []
        self.other = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(CONNECTIONS)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        i = offset
        while not self._stop.is_set():
            body = json.dumps({"instances": [self.rows[i % len(self.rows)]]})
            sent = time.monotonic()
            try:
                conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self.other += 1
                time.sleep(0.05)
                continue
            if response.status == 200:
                self.answered.append((sent, json.loads(answer)["request_id"]))
            else:
                self.other += 1
                time.sleep(0.05)
            i += CONNECTIONS


class Service:
    """`python -m <package> serve --workers 2` on a free port, logging to `log_url`."""

    def __init__(self, project: proj.Project, log_url: str, spool: Path, logs: Path) -> None:
        self.project, self.logs, self.port = project, logs, free_port()
        self.env = {
            **project.env,
            "ML_PREDICTION_LOG__URL": log_url,
            "ML_PREDICTION_LOG__SPOOL": str(spool),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        command = [str(self.project.python), "-m", self.project.package, "serve"]
        command += ["--port", str(self.port), "--workers", "2"]
        log_file = self.logs / f"serve-{self.port}-{self.starts}.log"
        self.process = service.start(
            command, cwd=self.project.root, env=self.env, log_file=log_file
        )
        url = f"http://127.0.0.1:{self.port}/ready"  # 200 with a log that fails too (fail_open)
        service.wait_until_ready(self.process, url, timeout=120)

    def get(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def ready(self) -> str:
        """/ready of both workers (each new connection may reach either): "200 degraded"."""
        answers = set()
        for _ in range(6):
            status, body = self.get("/ready")
            state = json.loads(body).get("prediction_log", "") if status == 200 else ""
            answers.add(f"{status} {state}".strip())
        return ", ".join(sorted(answers))

    def counts(self) -> dict[str, int]:
        text = self.get("/metrics")[1]
        return {name: int(float(value)) for name, value in ROWS_METRIC.findall(text)}

    def stop(self) -> float:
        assert self.process is not None
        started = time.monotonic()
        if not service.stop(self.process, timeout=60):
            raise StepError(f"the service on port {self.port} did not stop within 60 s")
        return time.monotonic() - started

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            service.stop(self.process, timeout=10)

    def workers(self) -> list[int]:
        """The uvicorn worker processes (not multiprocessing's helpers)."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = [int(pid) for pid in children.read_text().split()]
        return [p for p in pids if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


class Faults:
    def __init__(self, project: proj.Project, work: Path, seconds: float) -> None:
        self.project, self.work, self.seconds = project, work, seconds
        self.rows = project.sample_rows()
        self.pg: PostgresServer | None = None
        self._databases = 0

    # ------------------------------------------------------------ logs to run against

    def sqlite(self, name: str, directory: Path | None = None) -> Target:
        """(url, spool, database file): the spool is never on the faulty disk."""
        directory = directory or self.work / name
        directory.mkdir(parents=True, exist_ok=True)
        database = directory / "predictions.db"
        return f"sqlite:///{database}", self.work / f"{name}-spool", database

    def postgres(self) -> Target:
        assert self.pg is not None
        self._databases += 1
        name = f"faults{self._databases}"
        return self.pg.create_database(name), self.work / f"{name}-spool", name

    def logged_ids(self, database: Path | str) -> list[str]:
        if isinstance(database, Path):
            with contextlib.closing(sqlite3.connect(database)) as conn:
                return [r for (r,) in conn.execute("SELECT request_id FROM predictions")]
        assert self.pg is not None
        text = self.pg.sql(database, "SELECT request_id FROM predictions")
        return text.split()

    # ------------------------------------------------------------ one run

    def run(
        self,
        fault: str,
        target: Target,
        inject: Callable[[Service], float | None],
        recover: Callable[[Service], None],
        *,
        sigterm_during_fault: bool = False,
    ) -> Line:
        """One line of the table. When `inject` returns a time, only the requests sent after it
        are checked (rows written before a database is deleted go with it)."""
        url, spool, database = target
        line = Line(fault)
        svc = Service(self.project, url, spool, self.project.logs)
        svc.start()
        third = self.seconds / 3
        try:
            with Load(svc.port, self.rows) as load:
                time.sleep(third)
                since = inject(svc) or 0.0
                time.sleep(third / 2)
                line.ready = svc.ready()
                time.sleep(third / 2)
                if not sigterm_during_fault:
                    recover(svc)
                    time.sleep(third)
            time.sleep(0.5)  # the last rows reach the writer
            line.counts = svc.counts()
            line.stop_seconds = svc.stop()
            if sigterm_during_fault:
                recover(svc)
            if spooled_ids(spool):
                line.restarted = True  # the next start writes them
                svc.start()
                time.sleep(1)
                svc.stop()
        finally:
            svc.kill()  # after an error: leave nothing running
        answered = {rid for sent, rid in load.answered if sent >= since}
        ids = self.logged_ids(database)
        if len(ids) != len(set(ids)):
            raise StepError(f"{fault}: {len(ids) - len(set(ids))} row(s) logged twice")
        line.answered, line.logged = len(answered), len(answered & set(ids))
        line.spooled = len((answered - set(ids)) & spooled_ids(spool))
        line.other = load.other
        return line

    # ------------------------------------------------------------ the faults

    def read_only(self) -> Line:
        target = self.sqlite("read-only")
        database = Path(target[2])
        return self.run(
            "log files read-only (chattr +i)",
            target,
            lambda svc: immutable(database, on=True),
            lambda svc: immutable(database, on=False),
        )

    def read_only_together(self) -> Line:
        """The database and the spool fail at once (one folder for both, as in an image's
        /app/var): rows wait in memory until either takes them again."""
        folder = self.work / "together"
        database = folder / "predictions.db"
        target = (f"sqlite:///{database}", folder / "spool", database)
        files = [database, folder / "spool" / "spool.db"]
        return self.run(
            "database and spool read-only together (chattr +i)",
            target,
            lambda svc: immutable(*files, on=True),
            lambda svc: immutable(*files, on=False),
        )

    def disk_full(self) -> Line:
        with tmpfs(self.work / "full", "256m") as mount:
            filler = mount / "filler"
            return self.run(
                "disk full (a tmpfs filled up)",
                self.sqlite("disk-full", mount),
                lambda svc: fill(filler),
                lambda svc: filler.unlink(),
            )

    def deleted(self) -> Line:
        target = self.sqlite("deleted")
        folder = Path(target[2]).parent

        def delete(svc: Service) -> float:
            deleted_at = time.monotonic()
            for path in folder.glob("predictions.db*"):
                path.unlink()
            return deleted_at

        return self.run(
            "database files deleted (checked: requests after the delete)",
            target,
            delete,
            lambda svc: None,
        )

    def killed_worker(self) -> Line:
        return self.run(
            "SIGKILL of one worker",
            self.sqlite("sigkill"),
            lambda svc: os.kill(svc.workers()[0], signal.SIGKILL),
            lambda svc: None,
        )

    def postgres_restarted(self, pg: PostgresServer) -> Line:
        return self.run(
            "PostgreSQL stopped, restarted",
            self.postgres(),
            lambda svc: pg.stop(),
            lambda svc: pg.start(),
        )

    def postgres_frozen(self, pg: PostgresServer) -> Line:
        return self.run(
            "PostgreSQL frozen, then SIGTERM",
            self.postgres(),
            lambda svc: pg.freeze(),
            lambda svc: pg.thaw(),
            sigterm_during_fault=True,
        )

    def postgres_down_at_start(self, pg: PostgresServer) -> Line:
        target = self.postgres()
        pg.stop()
        return self.run(
            "PostgreSQL down at start, then up", target, lambda svc: None, lambda svc: pg.start()
        )


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def immutable(*databases: Path, on: bool) -> None:
    """chattr +i on the SQLite file and its WAL: even root's writes fail, to files already open
    too (chmod stops neither). Not the -shm index: SQLite maps it into memory, and a write to
    an immutable mapping kills the process (SIGBUS) rather than failing."""
    paths = [p for db in databases for p in (db, db.with_name(f"{db.name}-wal")) if p.exists()]
    subprocess.run(["chattr", "+i" if on else "-i", *map(str, paths)], check=True)


def fill(path: Path) -> None:
    """Write until the disk is full."""
    with path.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 1_048_576)


def spooled_ids(spool: Path) -> set[str]:
    """Request ids of the rows still in the spool."""
    if not (spool / "spool.db").exists():
        return set()
    with contextlib.closing(sqlite3.connect(spool / "spool.db")) as conn:
        return {r for (r,) in conn.execute("SELECT request_id FROM rows")}


def print_table(lines: list[Line]) -> None:
    print("| fault during load | answered 200 | logged | lost | still spooled | /ready during | "
          "spooled / held / written / dropped / quarantined | stop (s) | restarted |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for line in lines:
        if line.skipped:
            print(f"| {line.fault} | skipped: {line.skipped} | | | | | | | |")
            continue
        c = line.counts
        outcomes = ("spooled", "held", "written", "dropped", "quarantined")
        where = " / ".join(str(c.get(k, 0)) for k in outcomes)
        print(
            f"| {line.fault} | {line.answered} | {line.logged} | {line.lost} | {line.spooled} | "
            f"{line.ready} | {where} | {line.stop_seconds:.1f} | "
            f"{'yes' if line.restarted else 'no'} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="a baked, trained project (else: bake one)")
    parser.add_argument("--venv", type=Path, help="its virtualenv (else: make install)")
    parser.add_argument("--quick", action="store_true", help="4 s of load per fault, not 16 s")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = options.work or Path(tempfile.mkdtemp(prefix="faults-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ML_", "VIRTUAL_ENV"))}
    if options.project:
        (work / "logs").mkdir(exist_ok=True)
        (package,) = [p.parent.name for p in (options.project / "src").glob("*/__init__.py")]
        project = proj.Project(options.project, package, work / "logs", env)
    else:
        project = proj.bake(HERE.parent, work, env)
    if options.venv:  # the package from src/, the dependencies from the virtualenv
        project.env["PYTHONPATH"] = str(project.root / "src")
        if not project.python.exists():
            project = proj.use_venv(project, options.venv)
    elif not project.python.exists():
        project.make("install")
    if not (project.root / "models" / "metadata.json").exists():
        project.make("train")
    faults = Faults(project, work, 4.0 if options.quick else 16.0)
    lines: list[Line] = []
    root = os.geteuid() == 0
    for method in (faults.read_only, faults.read_only_together, faults.disk_full):
        if root and shutil.which("mount") and shutil.which("chattr"):
            lines.append(method())
        else:
            lines.append(Line(method.__name__.replace("_", " "), skipped="needs root (tmpfs)"))
    lines += [faults.deleted(), faults.killed_worker()]
    with postgres_server("faults0") as pg:
        faults.pg = pg
        for scenario in (faults.postgres_restarted, faults.postgres_frozen):
            lines.append(scenario(pg))
        lines.append(faults.postgres_down_at_start(pg))
    print_table(lines)
    lost = sum(line.lost for line in lines if not line.skipped)
    print(f"\n{lost} row(s) lost in all; work folder {work}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
