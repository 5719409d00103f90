"""Flows on a schedule: `make schedule` serves both on the crons of config.yaml until Ctrl-C, on a
Prefect server (the one `make orchestrator-ui` runs, or one of its own), and every run shows in
the UI. All of Prefect's state stays in .prefect/ (pyproject.toml: [tool.prefect])."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.server.schemas.schedules import CronSchedule
from prefect.settings import PREFECT_API_URL, temporary_settings

from ..config import Settings
from ..errors import UserError
from ..serving.process import http_status
from .flows import FLOWS

log = logging.getLogger(__name__)
PORT = 4200
SERVER = [sys.executable, "-m", "prefect", "server", "start", "--port", str(PORT)]


def schedule(settings: Settings) -> None:
    """Serve both flows on their cron schedules (orchestration.*, in UTC) until Ctrl-C."""
    crons = {
        "training": settings.orchestration.training_cron,
        "monitoring": settings.orchestration.monitoring_cron,
    }
    for name, cron in crons.items():
        try:
            (when,) = asyncio.run(CronSchedule(cron=cron).get_dates(n=1))
        except ValueError:  # said before a server starts
            raise UserError(
                f"orchestration.{name}_cron {cron!r} is not a cron expression: minute hour day "
                "month weekday, e.g. '0 3 * * 1' (Mondays at 03:00 UTC)."
            ) from None
        log.info("Deployment %s: cron %r, next run %s UTC", name, cron, f"{when:%Y-%m-%d %H:%M}")
    # The temporary server of a single run has no scheduler: schedules need a real one.
    with prefect_server() as url, temporary_settings({PREFECT_API_URL: url}):
        serve(*(RunnerDeployment.from_flow(FLOWS[n], n, cron=c) for n, c in crons.items()))


def orchestrator_ui() -> None:
    """The Prefect server and UI in the foreground, until Ctrl-C."""
    log.info("Prefect UI on http://127.0.0.1:%d (Ctrl+C to stop)", PORT)
    subprocess.run(SERVER, check=False)


@contextmanager
def prefect_server() -> Iterator[str]:
    """The API of `make orchestrator-ui` when it runs, else a server started for this block."""
    url = PREFECT_API_URL.value() or f"http://127.0.0.1:{PORT}/api"
    if http_status(f"{url}/health") == 200:
        yield url
        return
    # A session of its own: Ctrl-C stops the flows first, then this block stops the server.
    server = subprocess.Popen(SERVER, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while http_status(f"{url}/health") != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                raise UserError(f"The Prefect server did not start on port {PORT}: is it in use?")
            time.sleep(0.5)
        log.info("Prefect UI on http://127.0.0.1:%d (runs, logs, artifacts)", PORT)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
