"""Run the service with uvicorn; `python -m <package> serve` calls `run`.

Stopping: SIGTERM or Ctrl-C makes uvicorn stop accepting connections, finish the requests in
flight, then run the app's shutdown, which writes every queued prediction to the log.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from ..config import Settings
from ..errors import UserError
from ..logs import UVICORN_LOG_CONFIG

APP_FACTORY = f"{__package__}.app:create_app"
GRACEFUL_SHUTDOWN_SECONDS = 20  # then open requests are cancelled; below Kubernetes' 30 s


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
        )


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
