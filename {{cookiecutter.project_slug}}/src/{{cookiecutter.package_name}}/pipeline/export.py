"""models/: the champion's bundle, and models/challenger/: the challenger's, if there is one.

A new model is exported from this run, then its files are stored with its MLflow run. When the
champion stays, models/ is left as it is, or rebuilt from the champion's own run when it holds
something else, never from today's data. `make promote` and `make rollback` restore a version's
bundle from its run the same way.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ..bundle import METADATA_FILE, save_bundle
from ..config import Settings
from .onnx_export import Parity, export_onnx
from .registry import Promotion, Training

log = logging.getLogger(__name__)
RUN_FOLDER = "bundle"  # where a champion's run keeps a copy of its models/
# What an export writes (files of an earlier champion must not linger, e.g. its ROC curve).
EXPORTED = ("model.*", METADATA_FILE, "sample_request.json", "model_card.md", "*.png")


def export_bundle(
    settings: Settings, training: Training, promotion: Promotion, directory: Path
) -> tuple[Path, Parity | None]:
    """Write the run's best model to `directory` with a sample request and its plots; with
    serving.runtime onnx, also as ONNX checked against the pipeline on the test rows (its
    parity figures go into metadata.json and are returned for the model card)."""
    best, schema, test = training.best, training.schema, training.split.test
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
            "onnx_parity": None if parity is None else parity.to_dict(),
        },
    )
    sample = json.loads(test[schema.names].head(5).to_json(orient="records"))
    (directory / "sample_request.json").write_text(json.dumps({"instances": sample}, indent=2))
    for file_name, figure in best.evaluation.figures.items():
        figure.savefig(directory / file_name, dpi=100, bbox_inches="tight")
    log.info("Exported %s v%s to %s/", settings.model.registered_name, promotion.version, directory)
    return directory, parity


def store_with_run(directory: Path, run_id: str) -> None:
    """Keep a copy of the exported files with the model's run, to restore them from later (only
    the files: models/challenger/ belongs to another run)."""
    client = MlflowClient()
    for path in sorted(directory.iterdir()):
        if path.is_file():
            client.log_artifact(run_id, str(path), RUN_FOLDER)


def restore_bundle(settings: Settings, promotion: Promotion) -> None:
    """Make models/ hold the champion that stayed."""
    if not restore(settings.bundle_dir, promotion.champion_version, promotion.champion_run_id):
        log.warning(
            "Retrain the champion or move the @champion alias (make mlflow-ui) to fix models/."
        )


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
