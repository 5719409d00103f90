"""`make demo`: the whole loop on one machine, from raw data to a model answering requests{% if cookiecutter.include_monitoring %},
then its lifecycle: drift, a challenger in the shadow, compare, promote, roll back{% endif %}."""

from __future__ import annotations

{% if cookiecutter.include_monitoring -%}
import json
{% endif -%}
import logging
import os
{% if cookiecutter.include_monitoring -%}
import signal
{% endif -%}
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
    server = process.start(command, env={**os.environ, **SERVICE_ENV})
    try:
        with _timed("serve", timings):
            _wait_until_ready(f"http://{HOST}:{port}", server)
        exercise(settings, server, port, timings)
    finally:
        if not process.stop(server):
            log.warning("The service did not stop within %.0f s: killed it.", process.STOP_TIMEOUT)
        log.info("Service stopped.")
    steps = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in timings.items())
    log.info("Demo done in %.0f s (%s).", time.perf_counter() - start, steps)
    log.info("Model card: %s", settings.bundle_dir / "model_card.md")
    log.info("Runs and the model registry: `make mlflow-ui`, then open http://127.0.0.1:5000")
{%- if cookiecutter.include_monitoring %}


# The service tries a challenger in the shadow as soon as there is one (models/challenger/).
SERVICE_ENV = {"ML_SERVING__ROLLOUT": "shadow"}


def exercise(
    settings: Settings, server: subprocess.Popen[bytes], port: int, timings: dict[str, float]
) -> None:
    """Normal traffic and a drift report, drifted traffic and another; then the lifecycle."""
    from .monitoring.drift import monitor

    for drift in (False, True):
        phase = "drifted" if drift else "normal"
        with _timed(f"{phase} traffic", timings):
            sent = _traffic(settings, port, drift=drift)
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
    lifecycle(settings, server, port, timings)


def lifecycle(
    settings: Settings, server: subprocess.Popen[bytes], port: int, timings: dict[str, float]
) -> None:
    """A model retrained on the drifted rows becomes the challenger (it loses on the holdout);
    the service shadows it on drifted traffic; compare; promote it, then roll back, each picked
    up by the running service on SIGHUP."""
    from .monitoring.compare import compare
    from .pipeline import lifecycle as registry

    with _timed("challenger", timings):
        version = drifted_challenger(settings)
    if version is None:
        return
    _reload(server, port, champion=_served(port)[0], challenger=version)
    log.info("The service shadows challenger v%s.", version)
    with _timed("shadow traffic", timings):
        _traffic(settings, port, drift=True, copies=2)  # the champion's rows and the challenger's
    with _timed("compare", timings):
        compare(settings)
    champion = _served(port)[0]
    registry.promote(settings)
    _reload(server, port, champion=version, challenger=None)
    log.info("Promoted: the service answers with v%s.", version)
    registry.rollback(settings)
    _reload(server, port, champion=champion, challenger=None)
    log.info("Rolled back: the service answers with v%s again.", champion)


def drifted_challenger(settings: Settings) -> str | None:
    """Fit the family's default pipeline on the drifted training rows and register it: worse
    on the (undrifted) holdout rows, it becomes @challenger in models/challenger/. Its version,
    or None when it beat the champion after all."""
    from .monitoring.simulate import shift
    from .pipeline.evaluate import evaluate
    from .pipeline.features import build_pipeline
    from .pipeline.registry import Candidate, Training, log_run, start_tracking
    from .pipeline.train import export, gate
    from .processed import read_split

    split, schema = read_split(settings.data.processed_dir)
    drifted = split.train.assign(**shift(split.train[schema.names], schema))
    model = build_pipeline(schema, settings.model.family, settings.random_state)
    model.fit(schema.model_input(drifted), drifted[schema.target])
    test = evaluate(schema.task, model, schema.model_input(split.test), split.test[schema.target])
    candidate = Candidate("drifted", model, {}, float("nan"), "none", len(drifted), test)
    start_tracking(settings)
    log_run(settings, candidate, split, schema, selected=True)
    training = Training(split, schema, [candidate], candidate, trivial={})
    promotion = gate(settings, training)
    export(settings, training, promotion)
    if promotion.promoted:
        log.warning("The model trained on drifted rows beat the champion: no challenger to try.")
        return None
    return promotion.version


def _traffic(settings: Settings, port: int, *, drift: bool, copies: int = 1) -> int:
    """Send every held-out row (shifted with `drift`); return how many once all are logged
    (`copies` times each: twice when a challenger shadows the champion)."""
    from .monitoring.simulate import simulate
    from .prediction_log.reader import Reader

    reader = Reader(settings.prediction_log.url)
    logged = reader.count()
    sent = simulate(settings, host=HOST, port=port, drift=drift)
    # The service writes its log off the request path: let the last rows land.
    deadline = time.monotonic() + 10
    while reader.count() < logged + copies * sent and time.monotonic() < deadline:
        time.sleep(0.1)
    return sent


def _served(port: int) -> tuple[str, str | None]:
    """The versions of the champion and the challenger the service holds (GET /metadata)."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metadata", timeout=10) as response:
        metadata = json.load(response)
    return metadata["version"], metadata["challenger_version"]


def _reload(
    server: subprocess.Popen[bytes], port: int, *, champion: str, challenger: str | None
) -> None:
    """SIGHUP: the service loads models/ again; wait until it holds these versions."""
    server.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + READY_TIMEOUT
    while _served(port) != (champion, challenger):
        if time.monotonic() > deadline:
            raise DemoError(f"The service did not load v{champion} after SIGHUP.")
        time.sleep(0.1)
{%- else %}


SERVICE_ENV: dict[str, str] = {}


def exercise(
    settings: Settings, server: subprocess.Popen[bytes], port: int, timings: dict[str, float]
) -> None:
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


def _wait_until_ready(base_url: str, server: subprocess.Popen[bytes]) -> None:
    try:
        process.wait_until_ready(server, f"{base_url}/ready", timeout=READY_TIMEOUT)
    except process.ServiceProcessError as exc:
        raise DemoError(f"{exc} See the service's log above.") from exc
    log.info("Service ready at %s (API docs: %s/docs)", base_url, base_url)
