"""`make demo`: the whole loop on one machine, from raw data to a model answering requests."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from .config import Settings
from .errors import UserError
from .pipeline.data import prepare
from .pipeline.train import train
from .serving import process

log = logging.getLogger(__name__)
PACKAGE = __name__.rpartition(".")[0]
HOST = "127.0.0.1"
READY_TIMEOUT = 60.0  # seconds for the server to load the model


class DemoError(UserError):
    """The demo server did not start or answer."""


def demo(settings: Settings) -> None:
    """data -> train -> serve on a free port -> traffic -> stop the server; log where to look."""
    start = time.perf_counter()
    timings: dict[str, float] = {}
    with _timed("data", timings):
        prepare(settings)
    with _timed("train", timings):
        train(settings)
    port = process.free_port(HOST)
    command = [sys.executable, "-m", PACKAGE, "serve", "--host", HOST, "--port", str(port)]
    log.info("Starting the service: %s", " ".join(command[1:]))
    server = process.start(command)
    try:
        with _timed("serve", timings):
            _wait_until_ready(f"http://{HOST}:{port}", server)
        exercise(settings, port, timings)
    finally:
        if not process.stop(server):
            log.warning("The service did not stop within %.0f s: killed it.", process.STOP_TIMEOUT)
        log.info("Service stopped.")
    log.info("Demo done in %.0f s (%s).", time.perf_counter() - start, _fmt(timings))
    log.info("Model card: %s", settings.bundle_dir / "model_card.md")
    log.info("Runs and the model registry: `make mlflow-ui`, then open http://127.0.0.1:5000")
{%- if cookiecutter.include_monitoring %}


def exercise(settings: Settings, port: int, timings: dict[str, float]) -> None:
    """Every held-out row, then a drift report; the same rows shifted, then another report."""
    from .monitoring.monitor import monitor
    from .monitoring.simulate import simulate
    from .store import PredictionLog

    store = PredictionLog(settings.serving.prediction_log_url)
    for drift in (False, True):
        phase = "drifted" if drift else "normal"
        with _timed(f"{phase} traffic", timings):
            logged = store.count()
            sent = simulate(settings, host=HOST, port=port, drift=drift)
            # The service writes its log off the request path: let the last rows land.
            deadline = time.monotonic() + 10
            while store.count() < logged + sent and time.monotonic() < deadline:
                time.sleep(0.1)
        # Compare exactly this phase's rows: the log may hold traffic of earlier runs.
        window = settings.monitoring.model_copy(update={"window": sent})
        with _timed(f"monitor {phase}", timings):
            summary = monitor(settings.model_copy(update={"monitoring": window}))
        if summary.drift_detected != drift:
            log.warning(
                "Expected %s after %s traffic, got %.0f%% drifted columns: see %s",
                "drift" if drift else "no drift",
                phase,
                100 * summary.drifted_share,
                summary.report_path,
            )
    log.info("Drift report: %s (summary: drift_summary.json beside it)", summary.report_path)
{%- else %}


def exercise(settings: Settings, port: int, timings: dict[str, float]) -> None:
    """Send models/sample_request.json to /predict and log the answer."""
    sample = settings.bundle_dir / "sample_request.json"
    request = urllib.request.Request(
        f"http://{HOST}:{port}/predict",
        data=sample.read_bytes(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with _timed("predict", timings), urllib.request.urlopen(request, timeout=30) as response:
            answer = response.read().decode()
    except urllib.error.HTTPError as exc:
        raise DemoError(f"/predict answered {exc.code}: {exc.read().decode()}") from exc
    log.info("POST /predict with %s answered: %s", sample, answer)
{%- endif %}


@contextmanager
def _timed(stage: str, timings: dict[str, float]) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start
    log.info("== %s: %.1f s", stage, timings[stage])


def _fmt(timings: dict[str, float]) -> str:
    return ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in timings.items())


def _wait_until_ready(base_url: str, server: subprocess.Popen[bytes]) -> None:
    try:
        process.wait_until_ready(server, f"{base_url}/ready", timeout=READY_TIMEOUT)
    except process.ServiceProcessError as exc:
        raise DemoError(f"{exc} See the service's log above.") from exc
    log.info("Service ready at %s (API docs: %s/docs)", base_url, base_url)
