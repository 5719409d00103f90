"""Processes: run a command timed, with the peak memory of its process tree; start/stop servers."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("bench")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT = 30.0


class StepError(RuntimeError):
    """A step of the benchmark failed; the message says which and where its log is."""


@dataclass(frozen=True)
class Timed:
    seconds: float
    peak_rss_bytes: int


def _stat(pid: int | str) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, ... (man 5 proc)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rfind(")") + 2 :].split()


def _tree(root: int) -> list[int]:
    """`root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                children.setdefault(int(_stat(entry.name)[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_rss(root: int) -> int:
    """Resident memory (bytes) of `root` and all its descendants."""
    total = 0
    for pid in _tree(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    return total


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) used so far by `root` and its live descendants."""
    ticks = 0
    for pid in _tree(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = _stat(pid)
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


class PeakMemory:
    """Poll the resident memory of a process tree in a thread; `peak` is the largest sum seen."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_timed(
    command: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_file: Path
) -> Timed:
    """Run `command` to completion; StepError (with the log's path) if it fails."""
    log.info("$ %s", " ".join(command))
    with log_file.open("w") as out:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=dict(env), stdout=out, stderr=out)
        with PeakMemory(process.pid) as memory:
            code = process.wait()
        seconds = time.perf_counter() - start
    if code != 0:
        tail = "".join(log_file.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise StepError(f"`{' '.join(command)}` exited {code} (log: {log_file}):\n{tail}")
    return Timed(seconds, memory.peak)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """Status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def start_server(
    command: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_file: Path
) -> subprocess.Popen[bytes]:
    """Start `command` in its own process group (so stopping it stops its children too)."""
    log.info("$ %s", " ".join(command))
    with log_file.open("w") as out:
        return subprocess.Popen(
            command, cwd=cwd, env=dict(env), stdout=out, stderr=out, start_new_session=True
        )


def wait_ready(
    process: subprocess.Popen[bytes], url: str, started: float, timeout: float = 120.0
) -> float:
    """Seconds from `started` (a perf_counter) until GET `url` answers 200."""
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise StepError(f"the server exited with code {process.returncode} before {url}")
        if http_status(url, timeout=1.0) == 200:
            return time.perf_counter() - started
        time.sleep(0.02)
    raise StepError(f"{url} did not answer 200 within {timeout:.0f} s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (graceful: the service flushes its log); SIGKILL if it hangs."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log.warning("server %d did not stop within %.0f s: killing it", process.pid, STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
