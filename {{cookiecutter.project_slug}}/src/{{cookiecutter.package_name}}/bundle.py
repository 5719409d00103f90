"""The exported model bundle: model files plus metadata, loadable without MLflow.

    models/model.skops     the scikit-learn pipeline (skops: loading it runs no code)
    models/model.onnx      the same pipeline as ONNX, parity-checked at export (optional)
    models/metadata.json   version, metrics, schema, and each model file's sha256

Reading the metadata needs neither scikit-learn nor onnxruntime: each serving runtime opens
only the file it scores with, through `Bundle.path`, which checks the file's hash first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError
from .schema import Schema

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

MODEL_FILE = "model.skops"
ONNX_FILE = "model.onnx"
METADATA_FILE = "metadata.json"


class BundleError(UserError):
    """The bundle is missing or does not match its metadata."""


@dataclass(frozen=True)
class Bundle:
    directory: Path
    metadata: dict[str, Any]
    schema: Schema

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    def path(self, file_name: str) -> Path:
        """A model file of the bundle, after checking it is the one the metadata names."""
        path = self.directory / file_name
        expected = self.metadata.get("files", {}).get(file_name)
        if expected is None or not path.is_file():
            raise BundleError(
                f"The bundle in {self.directory}/ has no {file_name}: run `make train` to export "
                "it again."
            )
        if sha256(path) != expected:
            raise BundleError(
                f"{path} does not match the sha256 in {self.directory / METADATA_FILE}: the file "
                "was changed or copied incompletely. Run `make train` to export the bundle again."
            )
        return path

    def load_pipeline(self) -> Pipeline:
        """The scikit-learn pipeline; the hash check is what lets us trust the file's types."""
        from skops import io as sio

        path = self.path(MODEL_FILE)
        model: Pipeline = sio.load(path, trusted=sio.get_untrusted_types(file=path))
        return model


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
    onnx_model: bytes | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write model.skops (and model.onnx when given) and metadata.json into `directory`; return
    the metadata path. A model file of an earlier export that this one does not write is removed,
    so the bundle never mixes two models."""
    import sklearn
    from skops import io as sio

    directory.mkdir(parents=True, exist_ok=True)
    sio.dump(model, directory / MODEL_FILE)
    onnx_path = directory / ONNX_FILE
    if onnx_model is None:
        onnx_path.unlink(missing_ok=True)
    else:
        onnx_path.write_bytes(onnx_model)
    files = [MODEL_FILE] + ([ONNX_FILE] if onnx_model is not None else [])
    metadata = {
        "name": name,
        "version": str(version),
        "run_id": run_id,
        "task": schema.task,
        "metrics": metrics,
        "schema": schema.to_dict(),
        "classes": _classes(model),
        "files": {file_name: sha256(directory / file_name) for file_name in files},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sklearn_version": sklearn.__version__,
        **(extra or {}),
    }
    metadata_path = directory / METADATA_FILE
    metadata_path.write_text(json.dumps(metadata, indent=2))
    return metadata_path


def load_bundle(directory: Path) -> Bundle:
    """The bundle's metadata and schema; model files are opened (and verified) by who uses them."""
    metadata_path = directory / METADATA_FILE
    if not metadata_path.is_file():
        raise BundleError(f"No model bundle in {directory}/: run `make train` first.")
    metadata = json.loads(metadata_path.read_text())
    if "files" not in metadata:
        raise BundleError(
            f"{metadata_path} comes from an older version of this project: run `make train` to "
            "export the bundle again."
        )
    schema = Schema.from_dict(metadata["schema"])
    return Bundle(directory=directory, metadata=metadata, schema=schema)


def _classes(model: Pipeline) -> list[Any]:
    """The classifier's classes in the order of its probability columns (JSON values)."""
    classes = getattr(model, "classes_", None)
    return [] if classes is None else [c.item() if hasattr(c, "item") else c for c in classes]
