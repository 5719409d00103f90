"""Serving benchmarks: start each server as a real process, time its start-up, load it, stop it."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from procs import StepError, free_port, start_server, stop_server, tree_cpu, tree_rss, wait_ready

log = logging.getLogger("bench")
HERE = Path(__file__).resolve().parent
RESULT_PREFIX = "BENCH_RESULT "

Payload = Callable[[list[dict[str, Any]]], dict[str, Any]]


def instances(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"instances": rows}


def dataframe_records(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"dataframe_records": rows}


@dataclass(frozen=True)
class Server:
    """How to start one server and talk to it. `command` gets the port appended by `argv`."""

    name: str
    command: list[str]
    env: dict[str, str]
    ready_path: str
    predict_path: str
    payload: Payload
    cwd: Path

    def argv(self, port: int) -> list[str]:
        return [*self.command, "--port", str(port)]


@dataclass(frozen=True)
class Load:
    """What one load run measured: the BENCH_RESULT line of wrk (post.lua) or loadgen.py, plus
    the CPU time the server's processes used meanwhile (robust to a busy machine)."""

    requests: int
    duration_s: float
    http_errors: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    server_cpu_s: float = 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.server_cpu_s / self.requests if self.requests else 0.0

    @property
    def throughput(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def errors(self) -> int:
        return self.http_errors + self.socket_errors


@dataclass
class ServerResult:
    name: str
    ready_s: float
    predictions: list[Any]
    loads: dict[str, Load] = field(default_factory=dict)
    rss_mb: float = 0.0  # resident memory of the server's processes after the loads

    def to_dict(self) -> dict[str, Any]:
        loads = {
            k: {**asdict(v), "throughput": v.throughput, "cpu_ms_per_request": v.cpu_ms_per_request}
            for k, v in self.loads.items()
        }
        return {**asdict(self), "loads": loads}


@dataclass(frozen=True)
class LoadPlan:
    """The load runs made against every server (durations in whole seconds, as wrk wants)."""

    connections: int
    duration: int
    latency_duration: int
    warmup: int
    batch_rows: int


class LoadGenerator:
    """wrk when installed (with post.lua), else loadgen.py in its own process."""

    def __init__(self, log_dir: Path) -> None:
        self.wrk = shutil.which("wrk")
        self.log_dir = log_dir
        self.runs = 0
        if not self.wrk:
            log.warning(
                "wrk not found (apt-get install wrk): using the Python client loadgen.py, so the "
                "throughput figures are bounded by the client, not the servers."
            )

    @property
    def name(self) -> str:
        return "wrk" if self.wrk else "loadgen.py (client-bound)"

    def command(self, url: str, body: Path, connections: int, seconds: int) -> list[str]:
        if self.wrk:
            return [
                self.wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
                "-s", str(HERE / "post.lua"), url, "--", str(body),
            ]  # fmt: skip
        return [
            sys.executable, str(HERE / "loadgen.py"), url, str(body),
            "--connections", str(connections), "--duration", str(seconds),
        ]  # fmt: skip

    def run(self, url: str, body: Path, connections: int, seconds: int, server: int) -> Load:
        """Load `url` with POSTs of `body`; `server` is the pid whose process tree serves it."""
        command = self.command(url, body, connections, seconds)
        self.runs += 1
        cpu = tree_cpu(server)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        cpu = tree_cpu(server) - cpu
        (self.log_dir / f"load-{self.runs:02d}.log").write_text(done.stdout + done.stderr)
        for line in done.stdout.splitlines():
            if line.startswith(RESULT_PREFIX):
                return Load(**json.loads(line.removeprefix(RESULT_PREFIX)), server_cpu_s=cpu)
        raise StepError(f"`{' '.join(command)}` gave no result: {done.stderr.strip()[-500:]}")


def post_json(url: str, payload: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def write_bodies(
    server: Server, rows: list[dict[str, Any]], plan: LoadPlan, work: Path
) -> dict[str, Path]:
    """Request body files: one row, and `batch_rows` rows (the sample rows repeated)."""
    batch = [rows[i % len(rows)] for i in range(plan.batch_rows)]
    bodies = {}
    for kind, chosen in {"single": rows[:1], "batch": batch}.items():
        path = work / f"body-{server.payload.__name__}-{kind}.json"
        path.write_text(json.dumps(server.payload(chosen)))
        bodies[kind] = path
    return bodies


def measure_start(server: Server, log_file: Path) -> float:
    """Start the server, return seconds until its ready endpoint answers 200, stop it."""
    port = free_port()
    started = time.perf_counter()
    process = start_server(server.argv(port), cwd=server.cwd, env=server.env, log_file=log_file)
    try:
        return wait_ready(process, f"http://127.0.0.1:{port}{server.ready_path}", started)
    finally:
        stop_server(process)


def benchmark(server: Server, rows: list[dict[str, Any]], plan: LoadPlan, loader: LoadGenerator,
              work: Path) -> ServerResult:  # fmt: skip
    """Start `server`, check its answer to the sample rows, run the loads of `plan`, stop it."""
    bodies = write_bodies(server, rows, plan, work)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_file = work / f"server-{server.name.replace(' ', '-')}.log"
    started = time.perf_counter()
    process = start_server(server.argv(port), cwd=server.cwd, env=server.env, log_file=log_file)
    try:
        ready = wait_ready(process, base + server.ready_path, started)
        url = base + server.predict_path
        result = ServerResult(
            server.name, ready, post_json(url, server.payload(rows))["predictions"]
        )
        log.info("%s: ready in %.2f s; loading it with %s", server.name, ready, loader.name)
        runs = {
            "warmup": (bodies["single"], plan.connections, plan.warmup),
            "single": (bodies["single"], plan.connections, plan.duration),
            "latency": (bodies["single"], 1, plan.latency_duration),
            "batch": (bodies["batch"], plan.connections, plan.duration),
        }
        for kind, (body, connections, seconds) in runs.items():
            result.loads[kind] = loader.run(url, body, connections, seconds, process.pid)
        result.rss_mb = tree_rss(process.pid) / (1024 * 1024)
        if process.poll() is not None:
            raise StepError(f"{server.name} died under load (log: {log_file})")
        return result
    except (OSError, ValueError, KeyError) as exc:
        message = f"{server.name}: {exc.__class__.__name__}: {exc} (log: {log_file})"
        raise StepError(message) from exc
    finally:
        stop_server(process)
