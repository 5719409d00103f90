"""The exported model bundle: a skops model file plus metadata, loadable without MLflow."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sklearn
from sklearn.pipeline import Pipeline
from skops import io as sio

from .errors import UserError
from .schema import Schema

MODEL_FILE = "model.skops"
METADATA_FILE = "metadata.json"


class BundleError(UserError):
    """The bundle is missing or does not match its metadata."""


@dataclass(frozen=True)
class Bundle:
    model: Pipeline
    metadata: dict[str, Any]
    schema: Schema

    @property
    def version(self) -> str:
        return str(self.metadata["version"])


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_bundle(
    model: Pipeline,
    directory: Path,
    *,
    name: str,
    version: str,
    run_id: str,
    metrics: dict[str, float],
    schema: Schema,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write model.skops and metadata.json into `directory`; return the metadata path."""
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / MODEL_FILE
    sio.dump(model, model_path)
    metadata = {
        "name": name,
        "version": str(version),
        "run_id": run_id,
        "task": schema.task,
        "metrics": metrics,
        "schema": schema.to_dict(),
        "sha256": sha256(model_path),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sklearn_version": sklearn.__version__,
        **(extra or {}),
    }
    metadata_path = directory / METADATA_FILE
    metadata_path.write_text(json.dumps(metadata, indent=2))
    return metadata_path


def load_bundle(directory: Path) -> Bundle:
    """Load and verify the bundle; the hash check is what lets us trust the file's types."""
    model_path, metadata_path = directory / MODEL_FILE, directory / METADATA_FILE
    if not model_path.is_file() or not metadata_path.is_file():
        raise BundleError(f"No model bundle in {directory}/: run `make train` first.")
    metadata = json.loads(metadata_path.read_text())
    if sha256(model_path) != metadata.get("sha256"):
        raise BundleError(
            f"{model_path} does not match the sha256 in {metadata_path}: the file was changed "
            "or copied incompletely. Run `make train` to export the bundle again."
        )
    model = sio.load(model_path, trusted=sio.get_untrusted_types(file=model_path))
    return Bundle(model=model, metadata=metadata, schema=Schema.from_dict(metadata["schema"]))
