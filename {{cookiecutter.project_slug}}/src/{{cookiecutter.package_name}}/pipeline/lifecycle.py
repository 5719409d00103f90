"""models/ over a model's life: exported when trained, restored when promoted or rolled back.

    models/              the champion's bundle: what the service answers with
    models/challenger/   a newer model that did not replace it, to try on live traffic

Each exported bundle is also stored with the model's MLflow run. When the champion stays,
models/ is left as it is, or restored from the champion's own run, never from today's data.
`make promote` and `make rollback` move `@champion` (registry.py) and restore that version's
bundle the same way, before the alias moves: a failed export leaves the registry as it was. A
running service serves it after a reload (SIGHUP, server.py).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ..bundle import METADATA_FILE, save_bundle
from ..config import Settings
from ..errors import UserError
from . import registry
from .onnx_export import export_onnx
from .report import write_model_card

log = logging.getLogger(__name__)
RUN_FOLDER = "bundle"  # where a model's run keeps a copy of its exported files
# What an export writes (files of an earlier champion must not linger, e.g. its ROC curve).
EXPORTED = ("model.*", METADATA_FILE, "sample_request.json", "model_card.md", "*.png")


class LifecycleError(UserError):
    """Nothing to promote or roll back to, or the model's bundle cannot be restored."""


def export_bundle(
    settings: Settings, training: registry.Training, promotion: registry.Promotion
) -> Path:
    """Write the run's best model to models/ (a new champion, with its model card) or else to
    models/challenger/, with a sample request and its plots, and a copy to the model's run; with
    serving.runtime onnx, also as ONNX checked against the pipeline on the test rows."""
    best, schema, test = training.best, training.schema, training.split.test
    directory = settings.bundle_dir if promotion.promoted else settings.challenger_dir
    _clear(directory)
    onnx_model, parity = None, None
    if settings.serving.runtime == "onnx":
        onnx_model, parity = export_onnx(best.model, schema, test)
    save_bundle(
        best.model,
        directory,
        name=settings.model.registered_name,
        version=promotion.version,
        run_id=best.run_id,
        metrics=best.evaluation.metrics,
        schema=schema,
        onnx_model=onnx_model,
        extra={
            "model_family": settings.model.family,
            "onnx_parity": None if parity is None else asdict(parity),
        },
    )
    sample = json.loads(test[schema.names].head(5).to_json(orient="records"))
    (directory / "sample_request.json").write_text(json.dumps({"instances": sample}, indent=2))
    for file_name, figure in best.evaluation.figures.items():
        figure.savefig(directory / file_name, dpi=100, bbox_inches="tight")
    if promotion.promoted:
        write_model_card(directory / "model_card.md", settings, training, promotion, parity)
    client = MlflowClient()
    for path in sorted(directory.iterdir()):
        if path.is_file():  # only the files: models/challenger/ belongs to another run
            client.log_artifact(best.run_id, str(path), RUN_FOLDER)
    log.info("Exported %s v%s to %s/", settings.model.registered_name, promotion.version, directory)
    return directory


def restore(directory: Path, version: str, run_id: str) -> bool:
    """Make `directory` hold the bundle of `version` from its run: untouched when it already
    does. False when the run kept no copy."""
    metadata = directory / METADATA_FILE
    if metadata.is_file() and json.loads(metadata.read_text()).get("version") == version:
        log.info("%s/ already holds v%s: left as it is.", directory, version)
        return True
    with tempfile.TemporaryDirectory() as tmp:
        try:
            copy = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=RUN_FOLDER, dst_path=tmp
            )
        except (MlflowException, OSError):
            log.warning("%s/ does not hold v%s and its run kept no copy.", directory, version)
            return False
        _clear(directory)
        shutil.copytree(copy, directory, dirs_exist_ok=True)
    log.info("Restored v%s to %s/ from its run.", version, directory)
    return True


def remove_challenger(settings: Settings) -> None:
    """A new champion ends the challenge: models/challenger/ goes."""
    if settings.challenger_dir.is_dir():
        shutil.rmtree(settings.challenger_dir)
        log.info("Removed %s/: the challenge is over.", settings.challenger_dir)


def _clear(directory: Path) -> None:
    """Remove what an earlier export wrote, and nothing else."""
    for pattern in EXPORTED:
        for path in directory.glob(pattern):
            path.unlink()


def promote(settings: Settings) -> str:
    """Make `@challenger` the champion; return its version."""
    client, name = _registry(settings)
    challenger = registry.version_by_alias(client, name, registry.CHALLENGER)
    if challenger is None:
        raise LifecycleError(
            f"Model {name} has no @challenger to promote: `make train` makes one when a new "
            "model does not beat the champion on the holdout rows."
        )
    version = str(challenger.version)
    _restore_or_fail(settings, version, challenger.run_id)
    registry.crown(client, name, version)
    remove_challenger(settings)
    _reload_hint(settings, version)
    return version


def rollback(settings: Settings) -> str:
    """Give `@champion` back to the previous champion; return its version."""
    client, name = _registry(settings)
    versions = registry.history(client, name)
    if len(versions) < 2:
        raise LifecycleError(
            f"Model {name} has no previous champion to roll back to (champions so far: "
            f"{', '.join(versions) or 'none'})."
        )
    _restore_or_fail(settings, versions[-2], client.get_model_version(name, versions[-2]).run_id)
    client.set_model_version_tag(name, versions[-1], "rolled_back", "true")
    registry.write_history(client, name, versions[:-1])
    log.info("Rolled back: v%s left, v%s is @champion again.", versions[-1], versions[-2])
    _reload_hint(settings, versions[-2])
    return versions[-2]


def _registry(settings: Settings) -> tuple[MlflowClient, str]:
    registry.start_tracking(settings)
    client, name = MlflowClient(), settings.model.registered_name
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise LifecycleError(
            f"No registered model {name} in {settings.mlflow.tracking_uri}: run `make train`."
        ) from None
    return client, name


def _restore_or_fail(settings: Settings, version: str, run_id: str | None) -> None:
    if not run_id or not restore(settings.bundle_dir, version, run_id):
        raise LifecycleError(
            f"The run of v{version} kept no bundle to export: retrain with `make train`."
        )


def _reload_hint(settings: Settings, version: str) -> None:
    log.info(
        "%s/ holds v%s. A running service serves it after `kill -HUP <its pid>` (each worker "
        "reloads it in place: no request is dropped).",
        *(settings.bundle_dir, version),
    )


def mlflow_ui(settings: Settings, port: int) -> None:
    """Run the MLflow UI on the configured tracking store until interrupted."""
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri"]
    command += [settings.mlflow.tracking_uri, "--port", str(port)]
    log.info("MLflow UI on http://127.0.0.1:%d (Ctrl+C to stop)", port)
    subprocess.run(command, check=False)
