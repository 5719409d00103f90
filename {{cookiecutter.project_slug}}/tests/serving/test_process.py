"""The service as a child process: ready detection, early exit, graceful and forced stop."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.serving import process

# A tiny server whose /ready answers 200, in its own process.
READY_SERVER = """
import http.server, sys
class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/ready" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ready).serve_forever()
"""


def test_start_wait_and_stop_a_real_server(tmp_path: Path) -> None:
    port = process.free_port()
    log_file = tmp_path / "server.log"
    server = process.start([sys.executable, "-c", READY_SERVER, str(port)], log_file=log_file)
    try:
        waited = process.wait_until_ready(server, f"http://127.0.0.1:{port}/ready", timeout=30)
        assert waited >= 0
        assert process.http_status(f"http://127.0.0.1:{port}/other") == 404
    finally:
        assert process.stop(server, timeout=10)
    assert server.returncode == -signal.SIGTERM
    assert process.http_status(f"http://127.0.0.1:{port}/ready") is None


def test_a_server_that_exits_early_is_reported() -> None:
    server = process.start([sys.executable, "-c", "raise SystemExit(3)"])

    with pytest.raises(process.ServiceProcessError, match="exited with code 3"):
        process.wait_until_ready(server, "http://127.0.0.1:9/ready", timeout=30)


def test_a_server_that_never_gets_ready_times_out() -> None:
    server = process.start([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(process.ServiceProcessError, match="did not answer 200 within 1 s"):
            process.wait_until_ready(server, "http://127.0.0.1:9/ready", timeout=1)
    finally:
        process.stop(server, timeout=5)


def test_a_server_that_ignores_sigterm_is_killed() -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    server = subprocess.Popen(
        [sys.executable, "-c", f"{stubborn}; print(1, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert server.stdout is not None
    server.stdout.readline()  # SIGTERM is ignored from here on

    assert process.stop(server, timeout=0.5) is False
    assert server.returncode == -signal.SIGKILL
