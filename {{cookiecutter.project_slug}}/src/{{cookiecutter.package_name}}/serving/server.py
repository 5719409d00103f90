"""Run the service with uvicorn; `python -m <package> serve` calls `run`.

One worker (the default) runs in this process: nothing to spawn, one process's memory. More run
under uvicorn's supervisor, which restarts a worker that dies. Either way, SIGTERM or Ctrl-C
lets every worker finish its requests and write every queued prediction to the log; SIGHUP
makes every worker load models/ again and swap the new model in between requests (app.py), so
`make promote` or `make rollback` reaches a running service without a dropped request (uvicorn's
own SIGHUP restarts the workers, and a request on a connection they close then fails).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from ..config import Settings
from ..errors import UserError
from ..logging_config import UVICORN_LOG_CONFIG

log = logging.getLogger(__name__)
# Then open requests are cancelled, and the prediction log gets writer.CLOSE_SECONDS to write
# what is queued: the whole stop fits in 25 s, below Kubernetes' default grace of 30 s.
GRACEFUL_SHUTDOWN_SECONDS = 15
# A connection that has not sent a whole request head for this long (idle, or dripping its
# headers) is closed. The time a request may take is serving.request_timeout (guards.py).
KEEP_ALIVE_SECONDS = 5
# How long a worker may take to answer the supervisor's health check, e.g. while it starts on a
# busy machine (uvicorn's default, 5 s, is short enough to have it killed and restarted).
WORKER_START_SECONDS = 60


class ServeError(UserError):
    """Bad serving options."""


def run(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
) -> None:
    """Serve until stopped. Options left as None come from `settings.serving`; each worker
    process builds its app from config.yaml and ML_* variables, as this one did."""
    serving = settings.serving
    host = serving.host if host is None else host
    port = serving.port if port is None else port
    workers = serving.workers if workers is None else workers
    if workers < 1:
        raise ServeError(f"--workers must be at least 1, not {workers}.")
    if not 0 < port < 65536:
        raise ServeError(f"--port must be between 1 and 65535, not {port}.")
    _check_can_listen(host, port)
    # A request is scored by one thread; parallelism comes from requests and workers, and
    # OpenMP's own threads (HistGradientBoosting) would only fight them for the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    config = uvicorn.Config(
        f"{__package__}.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=HeadersDeadline,
        log_config=UVICORN_LOG_CONFIG,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_worker_healthcheck=WORKER_START_SECONDS,
    )
    if workers == 1 or "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        supervise(config)  # one worker keeps its metrics in memory
        return
    # Several workers share a fresh directory for their metrics (prometheus.py).
    with tempfile.TemporaryDirectory(prefix="prometheus-") as directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        try:
            supervise(config)
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]


def supervise(config: uvicorn.Config) -> None:
    """One worker in this process, or `config.workers` processes under uvicorn's supervisor."""
    if config.workers == 1:
        Server(config).run()
    else:
        Supervisor(config, sockets=[config.bind_socket()]).run()


class Server(uvicorn.Server):
    """uvicorn's server, except that once a signal has stopped it gracefully, the process exits
    with code 0, as the supervisor of several workers does (uvicorn raises the signal again:
    SIGTERM would end it with 143, and Ctrl-C with a KeyboardInterrupt)."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, except that SIGHUP reloads the model in every worker."""

    def handle_hup(self) -> None:
        log.info("Received SIGHUP: every worker reloads the model bundle.")
        for process in self.processes:
            if process.pid is not None:
                os.kill(process.pid, signal.SIGHUP)


class HeadersDeadline(HttpToolsProtocol):
    """uvicorn's HTTP protocol, except that a request's headers must be complete within
    timeout_keep_alive seconds of the connection or of the previous answer: uvicorn's own wait
    starts again with every byte, and not at all before a first request."""

    deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_headers()

    def on_headers_complete(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # uvicorn now waits for the next request
            self._wait_for_headers()

    def _wait_for_headers(self) -> None:
        # On time, the same as an idle connection: closed, unless it is closing already.
        handler = self.timeout_keep_alive_handler
        self.deadline = self.loop.call_later(self.timeout_keep_alive, handler)


def _check_can_listen(host: str, port: int) -> None:
    """Say in one line that the port is taken, before the model loads, not in uvicorn's
    traceback after. The probe binds as uvicorn will (SO_REUSEADDR, IPv6 for a host with ':')
    and closes at once, so the port is free again for uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                other = port + 1 if port < 65535 else port - 1
                raise ServeError(
                    f"port {port} is in use (another server?): pick another one, "
                    f"e.g. make serve PORT={other}"
                ) from None
            raise ServeError(
                f"cannot listen on {host}:{port} ({exc.strerror}): use a host of this machine "
                "(127.0.0.1, or 0.0.0.0 for every network interface) and a port above 1023."
            ) from None
