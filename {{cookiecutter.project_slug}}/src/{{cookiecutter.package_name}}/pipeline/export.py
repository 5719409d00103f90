"""models/: the champion's bundle, and only ever the champion's.

A new champion is exported from this run, then the whole folder is stored with its MLflow run.
When the champion stays, models/ is left as it is, or rebuilt from the champion's own run when
it holds something else, never from today's data.
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
from ..schema import Schema
from .onnx_export import Parity, export_onnx
from .processed import Split
from .registry import Candidate, Promotion

log = logging.getLogger(__name__)
RUN_FOLDER = "bundle"  # where a champion's run keeps a copy of its models/
# What an export writes (files of an earlier champion must not linger, e.g. its ROC curve).
EXPORTED = ("model.*", METADATA_FILE, "sample_request.json", "model_card.md", "*.png")


def export_bundle(
    settings: Settings, champion: Candidate, promotion: Promotion, split: Split, schema: Schema
) -> tuple[Path, Parity | None]:
    """Write the new champion to models/ with a sample request and its plots; with
    serving.runtime onnx, also as ONNX checked against the pipeline on the test rows (its parity
    figures go into metadata.json and are returned for the model card)."""
    directory = settings.bundle_dir
    _clear(directory)
    onnx_model, parity = None, None
    if settings.serving.runtime == "onnx":
        onnx_model, parity = export_onnx(champion.model, schema, split.test)
    save_bundle(
        champion.model,
        directory,
        name=settings.model.registered_name,
        version=promotion.version,
        run_id=champion.run_id,
        metrics=champion.evaluation.metrics,
        schema=schema,
        onnx_model=onnx_model,
        extra={
            "model_family": settings.model.family,
            "onnx_parity": None if parity is None else parity.to_dict(),
        },
    )
    sample = json.loads(split.test[schema.names].head(5).to_json(orient="records"))
    (directory / "sample_request.json").write_text(json.dumps({"instances": sample}, indent=2))
    for file_name, figure in champion.evaluation.figures.items():
        figure.savefig(directory / file_name, dpi=100, bbox_inches="tight")
    log.info("Exported %s v%s to %s/", settings.model.registered_name, promotion.version, directory)
    return directory, parity


def store_with_run(directory: Path, run_id: str) -> None:
    """Keep a copy of the exported folder with the champion's run, to restore it from later."""
    MlflowClient().log_artifacts(run_id, str(directory), RUN_FOLDER)


def restore_bundle(settings: Settings, promotion: Promotion) -> None:
    """Make models/ hold the champion that stayed: untouched when it already does."""
    directory = settings.bundle_dir
    metadata = directory / METADATA_FILE
    if metadata.is_file() and json.loads(metadata.read_text()).get("version") == (
        promotion.champion_version
    ):
        log.info(
            "%s/ already holds champion v%s: left as it is.", directory, promotion.champion_version
        )
        return
    with tempfile.TemporaryDirectory() as tmp:
        try:
            copy = mlflow.artifacts.download_artifacts(
                run_id=promotion.champion_run_id, artifact_path=RUN_FOLDER, dst_path=tmp
            )
        except (MlflowException, OSError):
            log.warning(
                "%s/ does not hold champion v%s and its run kept no copy: retrain it or move "
                "the @champion alias (make mlflow-ui).",
                directory,
                promotion.champion_version,
            )
            return
        _clear(directory)
        shutil.copytree(copy, directory, dirs_exist_ok=True)
    log.info("Restored champion v%s to %s/ from its run.", promotion.champion_version, directory)


def _clear(directory: Path) -> None:
    """Remove what an earlier export wrote, and nothing else."""
    for pattern in EXPORTED:
        for path in directory.glob(pattern):
            path.unlink()
