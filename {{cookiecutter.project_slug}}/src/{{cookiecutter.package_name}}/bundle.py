"""The exported model bundle: model files plus metadata, loadable without MLflow.

    models/model.skops     the scikit-learn pipeline (skops: loading it runs no code)
    models/model.onnx      the same pipeline as ONNX, parity-checked at export (optional)
    models/metadata.json   version, metrics, schema, and each model file's sha256

Reading the metadata needs neither scikit-learn nor onnxruntime: each serving runtime opens
only the file it scores with, through `Bundle.path`, which checks the file's hash first.

Whoever can write models/ could rewrite metadata.json too, so two checks do not trust the folder:
- serving.model_sha256 (ML_SERVING__MODEL_SHA256, set by CI when it builds the image) pins the
  sha256 of metadata.json, and with it every model file's hash;
- model.skops loads only the types of this project's pipelines (skops' own safe set plus
  TRUSTED_TYPES) and serving.trusted_types: an object of any other type is never built, so no code
  of its class runs.
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
        """The scikit-learn pipeline, if it holds only types this project trusts."""
        from skops import io as sio

        path = self.path(MODEL_FILE)
        trusted = [*TRUSTED_TYPES, *self.trusted_types]
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


def load_bundle(
    directory: Path, *, expected_sha256: str | None = None, trusted_types: Sequence[str] = ()
) -> Bundle:
    """The bundle's metadata and schema; model files are opened (and verified) by who uses them.

    `expected_sha256` (serving.model_sha256) is the sha256 metadata.json must have."""
    metadata_path = directory / METADATA_FILE
    if not metadata_path.is_file():
        raise BundleError(f"No model bundle in {directory}/: run `make train` first.")
    content = metadata_path.read_bytes()
    if expected_sha256 and hashlib.sha256(content).hexdigest() != expected_sha256:
        raise BundleError(
            f"{metadata_path} does not have the sha256 in serving.model_sha256 "
            "(ML_SERVING__MODEL_SHA256): this is not the bundle the service was deployed with. "
            f"If you exported a new one on purpose, set it to `sha256sum {metadata_path}`."
        )
    metadata = json.loads(content)
    if "files" not in metadata:
        raise BundleError(
            f"{metadata_path} comes from an older version of this project: run `make train` to "
            "export the bundle again."
        )
    schema = Schema.from_dict(metadata["schema"])
    return Bundle(directory, metadata, schema, tuple(trusted_types))


def _classes(model: Pipeline) -> list[Any]:
    """The classifier's classes in the order of its probability columns (JSON values)."""
    classes = getattr(model, "classes_", None)
    return [] if classes is None else [c.item() if hasattr(c, "item") else c for c in classes]
