"""The exported model bundle: model files plus metadata, loadable without MLflow.

    models/model.skops     the scikit-learn pipeline (skops: loading it runs no code)
    models/model.onnx      the same pipeline as ONNX, parity-checked at export (optional)
    models/metadata.json   version, metrics, schema, and each model file's sha256

Reading the metadata needs neither scikit-learn nor onnxruntime; each runtime opens the one file
it scores with through `Bundle.path`, which checks the file's hash first. Whoever can write
models/ could rewrite metadata.json too, so two checks do not trust the folder: serving.model_sha256
(set by CI when it builds the image) pins the sha256 of metadata.json, and with it every file's;
and model.skops loads only the types of this project's pipelines (TRUSTED_TYPES, plus
serving.trusted_types): an object of another type is never built, so no code of its class runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
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
# What skops does not trust by default but this project's pipelines hold (the trees of forests
# and of gradient boosting; numpy dtypes of class labels). Found with skops.io.get_untrusted_types.
TRUSTED_TYPES = (
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
)
RETRAIN = "Run `make train` to export the bundle again."


class BundleError(UserError):
    """The bundle is missing, does not match its metadata or its pinned sha256, or holds types
    this project does not load."""

    public = "no usable model bundle"


@dataclass(frozen=True)
class Bundle:
    directory: Path
    metadata: dict[str, Any]
    schema: Schema
    trusted_types: tuple[str, ...] = ()  # besides TRUSTED_TYPES (serving.trusted_types)

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    def path(self, file_name: str) -> Path:
        """A model file of the bundle, after checking it is the one the metadata names."""
        path = self.directory / file_name
        expected = self.metadata.get("files", {}).get(file_name)
        if expected is None or not path.is_file():
            raise BundleError(f"The bundle in {self.directory}/ has no {file_name}. {RETRAIN}")
        if sha256(path) != expected:
            raise BundleError(
                f"{path} does not match the sha256 in {self.directory / METADATA_FILE}: the file "
                f"was changed or copied incompletely. {RETRAIN}"
            )
        return path

    def load_pipeline(self) -> Pipeline:
        """The scikit-learn pipeline, if it holds only types this project trusts."""
        from skops import io as sio

        path, trusted = self.path(MODEL_FILE), [*TRUSTED_TYPES, *self.trusted_types]
        # Read from the file's table of contents: nothing in it is imported or run.
        refused = [name for name in sio.get_untrusted_types(file=path) if name not in trusted]
        if refused:
            raise BundleError(
                f"{path} holds types this project does not load: {', '.join(refused)}. Loading "
                "them could run their code. If you put them in the model yourself, add them to "
                "serving.trusted_types in config.yaml."
            )
        model: Pipeline = sio.load(path, trusted=trusted)
        return model


def sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


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
    the metadata path. A model file of an earlier export that this one does not write is
    removed, so the bundle never mixes two models."""
    import sklearn
    from skops import io as sio

    directory.mkdir(parents=True, exist_ok=True)
    sio.dump(model, directory / MODEL_FILE)
    (directory / ONNX_FILE).unlink(missing_ok=True)
    if onnx_model is not None:
        (directory / ONNX_FILE).write_bytes(onnx_model)
    classes = getattr(model, "classes_", [])  # in the order of the probability columns
    files = [file for file in (MODEL_FILE, ONNX_FILE) if (directory / file).is_file()]
    metadata = {
        "name": name,
        "version": str(version),
        "run_id": run_id,
        "task": schema.task,
        "metrics": metrics,
        "schema": schema.to_dict(),
        "classes": [c.item() if hasattr(c, "item") else c for c in classes],
        "files": {file: sha256(directory / file) for file in files},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sklearn_version": sklearn.__version__,
        **(extra or {}),
    }
    path = directory / METADATA_FILE
    path.write_text(json.dumps(metadata, indent=2))
    return path


def load_bundle(
    directory: Path, *, expected_sha256: str | None = None, trusted_types: Sequence[str] = ()
) -> Bundle:
    """The bundle's metadata and schema; model files are opened (and verified) by who uses them.
    `expected_sha256` (serving.model_sha256) is the sha256 metadata.json must have."""
    path = directory / METADATA_FILE
    if not path.is_file():
        raise BundleError(f"No model bundle in {directory}/: run `make train` first.")
    content = path.read_bytes()
    if expected_sha256 and hashlib.sha256(content).hexdigest() != expected_sha256:
        raise BundleError(
            f"{path} does not have the sha256 in serving.model_sha256 (ML_SERVING__MODEL_SHA256): "
            "this is not the bundle the service was deployed with. If you exported a new one on "
            f"purpose, set it to `sha256sum {path}`."
        )
    metadata = json.loads(content)
    if "files" not in metadata:
        raise BundleError(f"{path} comes from an older version of this project. {RETRAIN}")
    return Bundle(directory, metadata, Schema.from_dict(metadata["schema"]), tuple(trusted_types))
