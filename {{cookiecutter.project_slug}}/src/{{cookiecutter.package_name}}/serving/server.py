"""Run the service with uvicorn; `python -m <package> serve` calls `run`.

Stopping: SIGTERM or Ctrl-C makes uvicorn stop accepting connections, finish the requests in
flight, then run the app's shutdown, which writes every queued prediction to the log.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from ..config import Settings
from ..errors import UserError
from ..logs import UVICORN_LOG_CONFIG

APP_FACTORY = f"{__package__}.app:create_app"
GRACEFUL_SHUTDOWN_SECONDS = 20  # then open requests are cancelled; below Kubernetes' 30 s
# An idle connection is closed after this; the time a request may take is serving.request_timeout
# and the requests in flight serving.max_concurrency (guards.py).
KEEP_ALIVE_SECONDS = 5


class ServeError(UserError):
    """Bad serving options."""


def run(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
) -> None:
    """Serve until stopped. Options left as None come from `settings.serving`.

    Each worker process builds its app from config.yaml and ML_* variables, as this one did."""
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
    with _shared_metrics(workers):
        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=UVICORN_LOG_CONFIG,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )


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


@contextmanager
def _shared_metrics(workers: int) -> Iterator[None]:
    """Several workers write their metrics to one fresh directory that /metrics adds up."""
    if workers == 1 or "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="prometheus-") as directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        try:
            yield
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
