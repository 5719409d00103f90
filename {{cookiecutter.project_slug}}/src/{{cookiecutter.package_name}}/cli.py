"""Command line: one command per stage. The Makefile, CI and the README all call these."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Annotated

import typer

from .config import get_settings
from .errors import UserError
from .logging_config import setup_logging

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
log = logging.getLogger(__name__)


def stage(func: Callable[..., None]) -> Callable[..., None]:
    """Register a CLI command that shows user errors as one clear line and exits 1."""

    @wraps(func)
    def wrapper(*args: object, **kwargs: object) -> None:
        setup_logging()
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            log.error("%s", exc)
        sys.exit(1)

    return app.command()(wrapper)


@stage
def data() -> None:
    """Load, validate and split the data; save the schema and the monitoring reference."""
    from .pipeline.data import prepare

    prepare(get_settings())


@stage
def train() -> None:
    """Train a baseline and a tuned model, track them in MLflow, export the champion."""
    # OpenMP threads spin while they wait for work, taking CPU from everything else on a busy
    # machine; passive ones sleep. Read once, when scikit-learn loads OpenMP: set it before.
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    from .pipeline.train import train as run_training

    run_training(get_settings())


@stage
def evaluate() -> None:
    """Score the exported champion on the held-out test set."""
    from .pipeline.evaluate import evaluate_bundle

    evaluate_bundle(get_settings())


@stage
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
) -> None:
    """Serve the exported model over HTTP (FastAPI + uvicorn)."""
    from .serving.server import run

    run(get_settings(), host=host, port=port, workers=workers)


@stage
def promote() -> None:
    """Make the challenger the champion and export it to models/."""
    from .pipeline.lifecycle import promote as promote_challenger

    promote_challenger(get_settings())


@stage
def rollback() -> None:
    """Put the previous champion back and export it to models/."""
    from .pipeline.lifecycle import rollback as roll_back

    roll_back(get_settings())


@stage
def mlflow_ui(port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000) -> None:
    """Open the MLflow UI on the tracking store."""
    from .pipeline.lifecycle import mlflow_ui as run_ui

    run_ui(get_settings(), port=port)


@stage
def smoke(
    url: Annotated[str, typer.Option(help="Base URL of the running service.")],
    requests: Annotated[int, typer.Option(help="Requests to /predict for the latency.")] = 20,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for /ready while a sleeping instance wakes.")
    ] = 180,
) -> None:
    """Check a running service from outside: /health, /ready, /metadata, /predict, latency."""
    from .smoke import smoke as run_smoke

    settings = get_settings()
    key, sample = settings.serving.api_key, settings.bundle_dir / "sample_request.json"
    api_key = key.get_secret_value() if key else None
    run_smoke(url, sample, requests=requests, wait=wait, api_key=api_key)
{%- if cookiecutter.include_monitoring %}


@stage
def simulate(
    *,
    host: Annotated[str | None, typer.Option(help="Host of the running service.")] = None,
    port: Annotated[int | None, typer.Option(help="Port of the running service.")] = None,
    rows: Annotated[
        int | None, typer.Option(help="Rows to send (default: every held-out row once).")
    ] = None,
    drift: Annotated[bool, typer.Option(help="Shift the features so drift shows.")] = False,
    feedback_share: Annotated[
        float, typer.Option(help="Share of the rows whose true value is sent to /feedback.")
    ] = 0.5,
    feedback_delay: Annotated[
        float, typer.Option(help="Seconds between the predictions and their true values.")
    ] = 2.0,
) -> None:
    """Send held-out rows to the running service, optionally drifted, then true values of some."""
    from .monitoring.simulate import simulate as run_simulation

    run_simulation(
        get_settings(),
        host=host,
        port=port,
        rows=rows,
        drift=drift,
        feedback_share=feedback_share,
        feedback_delay=feedback_delay,
    )


@stage
def monitor(
    fail_on_drift: Annotated[
        bool, typer.Option(help="Exit with status 1 when drift is detected (for CI).")
    ] = False,
    fail_on_degradation: Annotated[
        bool,
        typer.Option(
            help="Exit with status 1 when live quality dropped (config: max_metric_drop)."
        ),
    ] = False,
) -> None:
    """Drift of the latest logged predictions vs the reference data, live quality where true
    values came back (POST /feedback), and an alert when either is found."""
    from .monitoring.alerts import notify
    from .monitoring.drift import monitor as run_monitor
    from .monitoring.quality import check_quality

    settings = get_settings()
    quality = check_quality(settings)
    summary = run_monitor(settings)
    notify(settings, summary, quality)
    drifted = fail_on_drift and summary.drift_detected
    degraded = fail_on_degradation and quality.degraded
    if drifted:
        log.error("Drift detected: retrain with `make train` (see %s).", summary.report_path)
    if degraded:
        log.error("Live quality degraded: retrain with `make train` (see %s).", quality.report_path)
    if drifted or degraded:
        raise typer.Exit(1)


@stage
def compare() -> None:
    """Champion vs challenger on the logged traffic: agreement, live quality, latency."""
    from .monitoring.compare import compare as run_compare

    run_compare(get_settings())
{%- endif %}
{%- if cookiecutter.orchestrator == "prefect" %}


@stage
def pipeline(
    flow: Annotated[str, typer.Option(help="training, or monitoring (drift -> retrain).")] = (
        "training"
    ),
) -> None:
    """One run of a Prefect flow; prints its final state (exit 1 unless Completed)."""
    from .orchestration.flows import run

    state = run(flow)
    if not state.is_completed():
        log.error("Flow %s: %s: %s", flow, state.name, state.message)
        raise typer.Exit(1)
    log.info("Flow %s: %s", flow, state.name)


@stage
def schedule() -> None:
    """Serve the training and monitoring flows on their cron schedules until Ctrl-C."""
    from .orchestration.schedule import schedule as serve_flows

    serve_flows(get_settings())


@stage
def orchestrator_ui() -> None:
    """The local Prefect server and UI: every run of the flows, its logs and artifacts."""
    from .orchestration.schedule import orchestrator_ui as run_ui

    run_ui()
{%- endif %}


@stage
def demo() -> None:
    """Run the whole loop: data, train, serve, send traffic{% if cookiecutter.include_monitoring %}, monitor drift{% endif %}."""
    from .demo import demo as run_demo

    run_demo(get_settings())
