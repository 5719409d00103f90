"""`make promote`, `make rollback`: move `@champion` in the registry and export its bundle;
`make mlflow-ui` to look at it all.

The bundle is restored from the copy each model's run keeps, so models/ holds exactly what was
exported when the model was trained. It is written before the alias moves: a failed export
leaves the registry as it was. A running service serves it after a reload (SIGHUP, server.py).
"""

from __future__ import annotations

import logging
import subprocess
import sys

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ..config import Settings
from ..errors import UserError
from .export import remove_challenger, restore
from .registry import CHALLENGER, CHAMPION, crown, history, step_back, version_by_alias

log = logging.getLogger(__name__)


class LifecycleError(UserError):
    """Nothing to promote or roll back to, or the model's bundle cannot be restored."""


def promote(settings: Settings) -> str:
    """Make `@challenger` the champion; return its version."""
    client, name = _registry(settings)
    challenger = version_by_alias(client, name, CHALLENGER)
    if challenger is None:
        raise LifecycleError(
            f"Model {name} has no @{CHALLENGER} to promote: `make train` makes one when a new "
            "model does not beat the champion on the holdout rows."
        )
    version = str(challenger.version)
    _export(settings, version, challenger.run_id)
    crown(client, name, version)
    remove_challenger(settings)
    _reload_hint(settings, version)
    return version


def rollback(settings: Settings) -> str:
    """Give `@champion` back to the previous champion; return its version."""
    client, name = _registry(settings)
    versions = history(client, name)
    if len(versions) < 2:
        raise LifecycleError(
            f"Model {name} has no previous champion to roll back to (champions so far: "
            f"{', '.join(versions) or 'none'})."
        )
    back = client.get_model_version(name, versions[-2])
    _export(settings, versions[-2], back.run_id)
    step_back(client, name)
    log.info("Rolled back: v%s left, v%s is @%s again.", versions[-1], versions[-2], CHAMPION)
    _reload_hint(settings, versions[-2])
    return versions[-2]


def _registry(settings: Settings) -> tuple[MlflowClient, str]:
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    client, name = MlflowClient(), settings.model.registered_name
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise LifecycleError(
            f"No registered model {name} in {settings.mlflow.tracking_uri}: run `make train`."
        ) from None
    return client, name


def _export(settings: Settings, version: str, run_id: str | None) -> None:
    if not run_id or not restore(settings.bundle_dir, version, run_id):
        raise LifecycleError(
            f"The run of v{version} kept no bundle to export: retrain with `make train`."
        )


def _reload_hint(settings: Settings, version: str) -> None:
    log.info(
        "%s/ holds v%s. A running service serves it after `kill -HUP <its pid>` (each worker "
        "reloads it in place: no request is dropped).",
        settings.bundle_dir,
        version,
    )


def mlflow_ui(settings: Settings, port: int) -> None:
    """Run the MLflow UI on the configured tracking store until interrupted."""
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri"]
    command += [settings.mlflow.tracking_uri, "--port", str(port)]
    log.info("MLflow UI on http://127.0.0.1:%d (Ctrl+C to stop)", port)
    subprocess.run(command, check=False)
