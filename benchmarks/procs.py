"""Processes: run a command timed, with the peak memory of its process tree; start/stop servers."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

log = logging.getLogger("bench")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVICE_PROCESS = (
    Path(__file__).resolve().parents[1]
    / "{{cookiecutter.project_slug}}/src/{{cookiecutter.package_name}}/serving/process.py"
)


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


def _load_service_process() -> ModuleType:
    """The generated project's own start / wait-until-ready / stop helper, loaded from the
    template (it has no template syntax and imports only the standard library)."""
    spec = importlib.util.spec_from_file_location("service_process", SERVICE_PROCESS)
    assert spec is not None and spec.loader is not None, SERVICE_PROCESS
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


service = _load_service_process()
free_port = service.free_port


def start_server(
    command: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_file: Path
) -> subprocess.Popen[bytes]:
    """Start `command` in its own process group (so stopping it stops its children too)."""
    log.info("$ %s", " ".join(command))
    process: subprocess.Popen[bytes] = service.start(command, cwd=cwd, env=env, log_file=log_file)
    return process


def wait_ready(
    process: subprocess.Popen[bytes], url: str, started: float, timeout: float = 120.0
) -> float:
    """Seconds from `started` (a perf_counter) until GET `url` answers 200."""
    try:
        service.wait_until_ready(process, url, timeout=timeout, interval=0.02)
    except service.ServiceProcessError as exc:
        raise StepError(str(exc)) from exc
    return time.perf_counter() - started


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (graceful: the service flushes its log); SIGKILL if it hangs."""
    if not service.stop(process):
        log.warning("server %d did not stop in time: killed it", process.pid)
