"""The service as a child process: start it, wait until it is ready, stop it gracefully.

Written once for `make demo`, the tests and the benchmarks. Only the standard library and no
import from this package, so a script can load this file on its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

STOP_TIMEOUT = 30.0  # seconds for the service to drain, flush its prediction log and exit


class ServiceProcessError(RuntimeError):
    """The service exited early or did not become ready in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start(
    command: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log_file: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `command` in a process group of its own, so that stopping it stops its workers.
    Output goes to `log_file` when given, else to this process's output."""
    with log_file.open("wb") if log_file else contextlib.nullcontext() as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=None if out is None else subprocess.STDOUT,
            start_new_session=True,
        )


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status of GET `url`, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:  # URLError included
        return None


def wait_until_ready(
    process: subprocess.Popen[bytes], url: str, timeout: float = 60.0, interval: float = 0.05
) -> float:
    """Seconds until GET `url` (the /ready route) answers 200; raises if the process exits or
    the timeout passes first."""
    started = time.perf_counter()
    while (waited := time.perf_counter() - started) < timeout:
        if process.poll() is not None:
            code = process.returncode
            raise ServiceProcessError(f"The service exited with code {code} before {url} answered.")
        if http_status(url, timeout=min(2.0, timeout)) == 200:
            return waited
        time.sleep(interval)
    raise ServiceProcessError(f"{url} did not answer 200 within {timeout:.0f} s.")


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM the process group: the service finishes its requests and flushes its log. True
    once no process of the group is left (workers may outlive their parent briefly); after
    `timeout`, SIGKILL and False."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.poll()  # reaps the parent: a zombie would still count
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # a process we may not signal is still there
            pass
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return False
