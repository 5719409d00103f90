"""`serve` for real: uvicorn's options, and a server (one worker, or two) that reloads on SIGHUP
and loses nothing on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import uvicorn
from typer.testing import CliRunner

import {{ cookiecutter.package_name }}
from {{ cookiecutter.package_name }}.bundle import METADATA_FILE, MODEL_FILE, ONNX_FILE
from {{ cookiecutter.package_name }}.cli import app
from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.prediction_log.reader import Reader
from {{ cookiecutter.package_name }}.schema import Schema
from {{ cookiecutter.package_name }}.serving import process, server
from {{ cookiecutter.package_name }}.serving.predictor import in_canary
from {{ cookiecutter.package_name }}.serving.server import ServeError, run

PACKAGE = {{ cookiecutter.package_name }}.__name__
PREDICT_200 = 'http_requests_total{method="POST",path="/predict",status="200"}'
SRC = Path({{ cookiecutter.package_name }}.__file__).resolve().parents[1]


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """uvicorn's supervisor replaced by a recorder; os.environ is a copy the test may change."""
    calls: list[dict[str, Any]] = []

    def record(config: uvicorn.Config) -> None:
        metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        calls.append({"config": config, "metrics_dir": metrics_dir})
        assert metrics_dir is None or Path(metrics_dir).is_dir()

    monkeypatch.setattr(server, "supervise", record)
    # These tests check options only: a server you left running on 8000 must not fail them
    # (the port check has its own tests, with real sockets).
    monkeypatch.setattr(server, "_check_can_listen", lambda host, port: None)
    environ = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    monkeypatch.setattr(os, "environ", environ)
    return calls


def test_run_serves_the_app_factory_with_the_settings(
    settings: Settings, uvicorn_calls: list[dict[str, Any]]
) -> None:
    run(settings)

    [call] = uvicorn_calls
    config = call["config"]
    assert config.app == f"{PACKAGE}.serving.app:create_app"
    assert config.factory is True
    assert (config.host, config.port, config.workers) == ("127.0.0.1", 8000, 1)
    assert config.log_config["root"]["level"] == "INFO"
    assert call["metrics_dir"] is None  # one process: its metrics stay in memory


def test_run_options_win_and_workers_share_their_metrics(
    settings: Settings, uvicorn_calls: list[dict[str, Any]]
) -> None:
    os.environ.pop("OMP_NUM_THREADS", None)

    run(settings, host="0.0.0.0", port=9000, workers=3)

    [call] = uvicorn_calls
    config = call["config"]
    assert (config.host, config.port, config.workers) == ("0.0.0.0", 9000, 3)
    assert call["metrics_dir"] is not None
    assert not Path(call["metrics_dir"]).exists()  # removed when the server stopped
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert os.environ["OMP_NUM_THREADS"] == "1"


@pytest.mark.parametrize(("option", "value"), [("workers", 0), ("port", 0), ("port", 70000)])
def test_run_refuses_bad_options(
    settings: Settings, uvicorn_calls: list[dict[str, Any]], option: str, value: int
) -> None:
    with pytest.raises(ServeError, match=f"--{option}"):
        run(settings, **{option: value})
    assert not uvicorn_calls


@pytest.fixture
def occupied_port() -> Iterator[int]:
    """A port another server listens on, on every interface."""
    with socket.socket() as other:
        other.bind(("0.0.0.0", 0))
        other.listen()
        yield other.getsockname()[1]


@pytest.fixture
def no_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    def start(config: uvicorn.Config) -> None:
        raise AssertionError("uvicorn started (and would have loaded the model)")

    monkeypatch.setattr(server, "supervise", start)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
@pytest.mark.usefixtures("no_uvicorn")
def test_a_port_in_use_is_refused_before_the_model_loads(
    settings: Settings, occupied_port: int, host: str
) -> None:
    with pytest.raises(ServeError) as refused:
        run(settings, host=host, port=occupied_port)

    assert str(refused.value).startswith(f"port {occupied_port} is in use")
    assert f"make serve PORT={occupied_port + 1}" in str(refused.value)


@pytest.mark.usefixtures("settings", "no_uvicorn")
def test_serve_on_a_port_in_use_says_so_in_one_line_and_exits_1(
    occupied_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    result = CliRunner().invoke(app, ["serve", "--port", str(occupied_port)])

    assert result.exit_code == 1
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.getMessage().startswith(f"port {occupied_port} is in use")
    assert "make serve PORT=" in record.getMessage()


def test_the_port_check_leaves_the_port_free_for_uvicorn(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    bound: list[int] = []

    def bind_like_uvicorn(config: uvicorn.Config) -> None:
        with config.bind_socket() as sock:
            bound.append(sock.getsockname()[1])

    monkeypatch.setattr(server, "supervise", bind_like_uvicorn)
    run(settings, port=port)

    assert bound == [port]


@pytest.mark.usefixtures("no_uvicorn")
def test_a_host_that_is_not_this_machine_is_refused_in_one_line(settings: Settings) -> None:
    with pytest.raises(ServeError, match=r"cannot listen on 192\.0\.2\.1:8000 .*: use a host"):
        run(settings, host="192.0.2.1", port=8000)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    """This environment without settings overrides, with the package importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_")}
    for name in ("CONFIG_FILE", "PROMETHEUS_MULTIPROC_DIR", "COVERAGE_PROCESS_START"):
        env.pop(name, None)
    return {**env, "PYTHONPATH": str(SRC)}


def wait_ready(base_url: str, server: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "the server exited"
        try:
            if httpx.get(f"{base_url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready after {timeout} s")


class Load:
    """Threads that post rows one by one on kept-alive connections until stopped; each answer
    is kept as (status, model version), in order (status 0: no answer)."""

    def __init__(self, client: httpx.Client, records: list[dict[str, Any]], threads: int = 4):
        self.client, self.records = client, records
        self.answers: list[tuple[int, str]] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._post, args=(n,)) for n in range(threads)]
        for thread in self.threads:
            thread.start()

    def _post(self, offset: int) -> None:
        i = offset
        while not self.stopping.is_set():
            row = self.records[i % len(self.records)]
            try:
                response = self.client.post("/predict", json={"instances": [row]})
                self.answers.append((response.status_code, response.json()["model_version"]))
            except (httpx.HTTPError, ValueError, KeyError) as exc:  # no answer, or not JSON
                self.answers.append((0, type(exc).__name__))
            i += 1

    def served_only(self, version: str, last: int = 40) -> bool:
        recent = self.answers[-last:]
        return len(recent) == last and all(v == version for _, v in recent)

    def stop(self) -> list[tuple[int, str]]:
        self.stopping.set()
        for thread in self.threads:
            thread.join()
        return self.answers


@pytest.mark.parametrize("workers", [1, 2])  # one runs in the `serve` process, two under it
def test_workers_reload_a_new_bundle_on_sighup_and_lose_nothing_on_sigterm(
    settings: Settings,
    challenger_dir: Path,
    frame: pd.DataFrame,
    schema: Schema,
    tmp_path: Path,
    *,
    workers: int,
) -> None:
    """Under steady load on kept-alive connections: models/ changes from v1 to v2 (what `make
    promote` does), SIGHUP reloads it in every worker, then SIGTERM stops them. No request
    fails, every answered row is logged, and the answers move from v1 to v2."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    records = json.loads(frame[schema.names].to_json(orient="records"))
    command = [
        *[sys.executable, "-m", PACKAGE, "serve"],
        *["--port", str(port), "--workers", str(workers)],
    ]
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as server_log:
        server = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=clean_env(),
            stdout=server_log,
            stderr=server_log,
            start_new_session=True,
        )
        try:
            wait_ready(base_url, server)
            wait_for(lambda: log_path.read_text().count("Application startup complete") == workers)
            with httpx.Client(base_url=base_url, timeout=30) as client:
                load = Load(client, records)
                try:
                    wait_for(lambda: load.served_only("1"))
                    for name in (ONNX_FILE, MODEL_FILE, METADATA_FILE):  # the metadata last
                        shutil.copy(challenger_dir / name, settings.bundle_dir / name)
                    server.send_signal(signal.SIGHUP)
                    wait_for(lambda: load.served_only("2"))
                finally:
                    answers = load.stop()
                answered = sum(status == 200 for status, _ in answers)
                # A worker counts a request once its answer is sent: the last count may land
                # just after the client has it.
                wait_for(lambda: f"{PREDICT_200} {answered}.0" in client.get("/metrics").text)
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=60) == 0
        finally:
            kill_group(server)

    assert [a for a in answers if a[0] != 200] == []
    assert answers[0][1] == "1"
    log = Reader(settings.prediction_log.url)
    assert log.count() == len(answers)
    assert log.latest(len(answers))["model_version"].value_counts().to_dict() == (
        pd.Series([v for _, v in answers]).value_counts().to_dict()
    )
    output = log_path.read_text()
    assert output.count("Reloaded: version 2 replaces 1.") == workers
    assert output.count("Application shutdown complete") == workers
    assert "Traceback" not in output


@pytest.mark.usefixtures("bundle_dir")  # a trained bundle in models/
def test_ctrl_c_stops_a_single_worker_cleanly_with_exit_code_0(tmp_path: Path) -> None:
    """One worker runs in the `serve` process: Ctrl-C (SIGINT) drains it, and it exits 0,
    not by the signal uvicorn raises again (a KeyboardInterrupt traceback)."""
    port = free_port()
    command = [sys.executable, "-m", PACKAGE, "serve", "--port", str(port), "--workers", "1"]
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as server_log:
        server = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=clean_env(),
            stdout=server_log,
            stderr=server_log,
            start_new_session=True,
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}", server)
            server.send_signal(signal.SIGINT)
            assert server.wait(timeout=60) == 0
        finally:
            kill_group(server)
    output = log_path.read_text()
    assert "Application shutdown complete" in output
    assert "Traceback" not in output


def test_canary_over_real_http_answers_each_key_with_its_model(
    settings: Settings, challenger_dir: Path, frame: pd.DataFrame, schema: Schema, tmp_path: Path
) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    row = json.loads(frame[schema.names].head(1).to_json(orient="records"))[0]
    keys = [f"session-{i}" for i in range(200)]
    env = {**clean_env(), "ML_SERVING__ROLLOUT": "canary", "ML_SERVING__CANARY_SHARE": "0.25"}
    command = [sys.executable, "-m", PACKAGE, "serve", "--port", str(port), "--workers", "2"]
    server = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_ready(base_url, server)
        with httpx.Client(base_url=base_url, timeout=30) as client:
            versions = [
                client.post(
                    "/predict", json={"instances": [row]}, headers={"X-Request-Key": key}
                ).json()["model_version"]
                for key in keys
            ]
    finally:
        kill_group(server)

    assert versions == ["2" if in_canary(key, 0.25) else "1" for key in keys]
    assert 0.15 < versions.count("2") / len(keys) < 0.35


def kill_group(server: subprocess.Popen[bytes]) -> None:
    """Whatever is left of the server and its workers: a worker outlives a killed parent."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {timeout} s"
        time.sleep(0.05)


SERVE_ONLY = """
import sys
from fastapi.testclient import TestClient
from {package}.serving.app import create_app
from {package}.cli import app

with TestClient(create_app()) as client:
    assert client.get("/ready").status_code == 200, client.get("/ready").text
heavy = [m for m in ("mlflow", "evidently", "matplotlib") if m in sys.modules]
assert not heavy, heavy
"""


def test_serving_imports_nothing_from_training_or_monitoring(
    settings: Settings, bundle_dir: Path, tmp_path: Path
) -> None:
    """The serve extra has no mlflow, evidently or matplotlib: the service must not need them."""
    code = SERVE_ONLY.format(package=PACKAGE)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr


def test_over_the_concurrency_limit_is_a_503_at_once_and_slow_bodies_time_out(
    settings: Settings, bundle_dir: Path, tmp_path: Path
) -> None:
    """One request in flight at most: a client that sends its headers but not its body holds
    the slot (the server asks for the body with `100 Continue`), so the next request is refused
    with 503 and Retry-After instead of waiting (not /health); the slow one gets 408 after the
    timeout."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {**clean_env(), "ML_SERVING__MAX_CONCURRENCY": "1", "ML_SERVING__REQUEST_TIMEOUT": "2"}
    command = [sys.executable, "-m", PACKAGE, "serve", "--port", str(port)]
    with (tmp_path / "server.log").open("wb") as server_log:
        server = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=server_log, stderr=server_log
        )
        try:
            wait_ready(base_url, server)
            with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
                slow.sendall(
                    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100\r\nExpect: 100-continue\r\n\r\n"
                )
                assert slow.recv(1024).startswith(b"HTTP/1.1 100 Continue")
                started = time.monotonic()
                busy = httpx.get(f"{base_url}/metadata", timeout=30)
                answered_in = time.monotonic() - started
                alive = httpx.get(f"{base_url}/health", timeout=30)
                late = slow.recv(4096)
            after = httpx.get(f"{base_url}/metadata", timeout=30)
            head = httpx.head(f"{base_url}/metadata", timeout=30)
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()

    assert busy.status_code == 503
    assert busy.headers["Retry-After"] == "1"
    assert "busy" in busy.json()["detail"]
    assert answered_in < 2  # refused at once, not queued behind the slow request
    assert alive.status_code == 200  # liveness is never refused
    assert late.startswith(b"HTTP/1.1 408")
    assert after.status_code == 200
    assert head.status_code == 200 and head.content == b""  # HEAD over real HTTP too
    assert head.headers["content-length"] == after.headers["content-length"]


@contextlib.contextmanager
def served(tmp_path: Path, **settings: str) -> Iterator[tuple[int, int]]:
    """`serve` with one worker (in the `serve` process itself) and these ML_SERVING__* settings,
    until the block ends: its port and process id."""
    port = free_port()
    env = {**clean_env(), **{f"ML_SERVING__{name.upper()}": v for name, v in settings.items()}}
    command = [sys.executable, "-m", PACKAGE, "serve", "--port", str(port)]
    service = process.start(command, cwd=tmp_path, env=env, log_file=tmp_path / "server.log")
    try:
        process.wait_until_ready(service, f"http://127.0.0.1:{port}/ready", timeout=90)
        yield port, service.pid
    finally:
        process.stop(service)


KEY = "k3y-for-tests"
AUTHORIZED = {"Authorization": f"Bearer {KEY}"}
BIG = 92_000_000  # bytes: the body that took a worker from 155 MB to 730 MB before its 401


def post_head(port: int, path: str) -> socket.socket:
    """A connection that has sent the headers of a big POST without the API key, no body yet."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {BIG}\r\n\r\n".encode()
    )
    return sock


def resident_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def test_a_client_that_sends_its_whole_body_first_reads_its_413(
    settings: Settings, bundle_dir: Path, tmp_path: Path
) -> None:
    """urllib sends the whole body before it reads the answer: a 413 sent (and the connection
    closed) while the 12 MB were still coming would reach it as a reset."""
    body = b'{"instances": [' + b" " * 12_000_000 + b"]}"
    with served(tmp_path) as (port, _):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict", body, {"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)

    assert refused.value.code == 413
    assert b"fewer instances" in refused.value.read()


@pytest.mark.parametrize("path", ["/feedback", "/predict"])
def test_a_body_without_the_key_is_never_read(
    settings: Settings, bundle_dir: Path, tmp_path: Path, path: str
) -> None:
    """The 401 comes at once, before the body has even started; sending the 92 MB after it
    leaves the worker's memory where it was."""
    with served(tmp_path, api_key=KEY) as (port, pid):
        idle = resident_mb(pid)
        with post_head(port, path) as sock:
            started = time.monotonic()
            answer = sock.recv(4096)
            waited = time.monotonic() - started
            with contextlib.suppress(OSError):  # the server may close before all of it is sent
                for _ in range(BIG // 2**20):
                    sock.sendall(b" " * 2**20)
        grown = resident_mb(pid) - idle

    assert answer.startswith(b"HTTP/1.1 401"), answer
    assert waited < 2
    assert grown < 20


def test_slow_bodies_without_the_key_take_no_slot(
    settings: Settings, bundle_dir: Path, tmp_path: Path, frame: pd.DataFrame, schema: Schema
) -> None:
    """150 clients without the key dripping their bodies to /feedback, two slots: each gets its
    401 at once, and authorised /predict answers 40 times out of 40 meanwhile."""
    row = json.loads(frame[schema.names].head(1).to_json(orient="records"))[0]
    with served(tmp_path, api_key=KEY, max_concurrency="2") as (port, _):
        slow = [post_head(port, "/feedback") for _ in range(150)]
        try:
            refusals = [sock.recv(4096) for sock in slow]
            for sock in slow:
                sock.sendall(b"{")  # still sending
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                body = {"instances": [row]}
                answers = [
                    client.post("/predict", json=body, headers=AUTHORIZED).status_code
                    for _ in range(40)
                ]
        finally:
            for sock in slow:
                sock.close()

    assert all(refusal.startswith(b"HTTP/1.1 401") for refusal in refusals)
    assert answers == [200] * 40


def closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """Whether the server closes the connection before `deadline` (a monotonic time)."""
    sock.settimeout(max(deadline - time.monotonic(), 0.01))
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_connections_that_never_finish_their_headers_are_closed(
    settings: Settings, bundle_dir: Path, tmp_path: Path
) -> None:
    """uvicorn closes an idle connection after KEEP_ALIVE_SECONDS, but waited without end for
    a request head that never ends (any byte restarted its wait) or never starts. Both are
    closed now, a little after KEEP_ALIVE_SECONDS, and the service answers meanwhile."""
    seconds = server.KEEP_ALIVE_SECONDS
    with served(tmp_path) as (port, _):
        started = time.monotonic()
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
        dripping = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
        try:
            for sock in dripping:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            time.sleep(seconds / 2)
            for sock in dripping:
                sock.sendall(b"X-Still: here\r\n")
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code
            closed = [closed_by_server(sock, started + seconds + 5) for sock in silent + dripping]
            waited = time.monotonic() - started
        finally:
            for sock in silent + dripping:
                sock.close()

    assert health == 200
    assert all(closed), f"{closed.count(False)} of {len(closed)} connections still open"
    assert seconds - 1 < waited < seconds + 5
