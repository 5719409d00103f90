"""What scores the rows: onnxruntime on models/model.onnx (default) or the scikit-learn pipeline.

Both take validated request rows and give back JSON-ready predictions and, for classifiers, each
class's probability. The predictor holds one and never asks which (config: serving.runtime).
Each imports its library only when loaded, so serving with ONNX needs no scikit-learn or pandas.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .bundle import ONNX_FILE, Bundle, BundleError
from .schema import Schema, category_text

if TYPE_CHECKING:
    import onnxruntime as ort
    from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)
Scores = tuple[list[Any], list[dict[str, float]] | None]


class NotScorableError(ValueError):
    """Valid values the model still cannot score (e.g. 1e308 overflows float32 trees)."""


class Runtime(Protocol):
    def score(self, rows: list[dict[str, Any]]) -> Scores:
        """Predictions, and per row each class's probability (classifiers) or None."""
        ...


def load_runtime(name: str, bundle: Bundle) -> Runtime:
    """The runtime called `name` (serving.runtime), ready to score with the bundle's model."""
    if name == "onnx":
        return OnnxRuntime.load(bundle)
    return SklearnRuntime.load(bundle)


def onnx_inputs(schema: Schema, rows: list[dict[str, Any]]) -> list[np.ndarray[Any, Any]]:
    """One [rows, 1] array per feature, in schema order: float32 numbers (NaN when missing) and
    category text, exactly as `Schema.frame` prepares them for the scikit-learn pipeline."""
    numbers = schema.numbers(rows)
    if np.isinf(numbers).any():
        raise NotScorableError("a number is beyond the float32 range the model computes in")
    numeric = iter(numbers.T)
    return [
        next(numeric).reshape(-1, 1)
        if feature.kind == "numeric"
        else np.array([[category_text(row.get(feature.name))] for row in rows], dtype=object)
        for feature in schema.features
    ]


class OnnxRuntime:
    """onnxruntime on models/model.onnx; one thread per request, concurrency comes from requests."""

    def __init__(self, session: ort.InferenceSession, schema: Schema, classes: list[Any]) -> None:
        self.session = session
        self.schema = schema
        self.classes = np.array(classes, dtype=object)
        # The model's inputs are the features in schema order (ONNX names replace spaces and
        # other characters with "_", so the order is what maps them).
        self.inputs = [node.name for node in session.get_inputs()]
        # Classifiers: [label, probabilities]; regressors: [variable]. The last is what we read.
        self.output = session.get_outputs()[-1].name

    @classmethod
    def load(cls, bundle: Bundle) -> OnnxRuntime:
        import onnxruntime as ort
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        if ONNX_FILE not in bundle.metadata["files"]:
            raise BundleError(
                f"The bundle in {bundle.directory}/ has no {ONNX_FILE} (exported with "
                "serving.runtime: sklearn): set serving.runtime: sklearn, or set it to onnx and "
                "run `make train`."
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        path = bundle.path(ONNX_FILE)
        try:
            # No custom-operator library is registered: a model that needs one is refused here.
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except (ort_errors.Fail, ort_errors.InvalidGraph, ort_errors.InvalidProtobuf) as exc:
            reason = str(exc).rsplit("failed:", 1)[-1].strip()
            raise BundleError(
                f"onnxruntime cannot load {path} ({reason}): this service runs standard ONNX "
                "operators only. Run `make train` to export the bundle again."
            ) from None
        return cls(session, bundle.schema, bundle.metadata.get("classes", []))

    def score(self, rows: list[dict[str, Any]]) -> Scores:
        feed = dict(zip(self.inputs, onnx_inputs(self.schema, rows), strict=True))
        (outputs,) = self.session.run([self.output], feed)
        if self.schema.task != "classification":
            values = np.asarray(outputs, dtype=np.float64).reshape(len(rows))
            return _values(values), None
        return _classified(self.classes, np.asarray(outputs, dtype=np.float64))


class SklearnRuntime:
    """The scikit-learn pipeline from models/model.skops, as trained."""

    def __init__(self, model: Pipeline, schema: Schema) -> None:
        self.model = model
        self.schema = schema

    @classmethod
    def load(cls, bundle: Bundle) -> SklearnRuntime:
        import sklearn

        trained_with = bundle.metadata.get("sklearn_version")
        if trained_with and trained_with != sklearn.__version__:
            log.warning(
                "The model was trained with scikit-learn %s, this is %s: retrain if in doubt.",
                trained_with,
                sklearn.__version__,
            )
        model = bundle.load_pipeline()
        # One request is scored by one thread; parallelism comes from concurrent requests.
        params = model.get_params()
        model.set_params(**{key: 1 for key in params if key.endswith("n_jobs")})
        return cls(model, bundle.schema)

    def score(self, rows: list[dict[str, Any]]) -> Scores:
        frame = self.schema.frame(rows)
        with np.errstate(all="ignore"):  # an overflow shows as a non-finite output, checked below
            try:
                if self.schema.task != "classification":
                    return _values(self.model.predict(frame)), None
                proba = self.model.predict_proba(frame)
            except ValueError as exc:  # e.g. a value beyond float32 in a tree model
                raise NotScorableError(str(exc)) from exc
        return _classified(self.model.classes_, proba)


def _values(values: np.ndarray[Any, Any]) -> list[Any]:
    _check_finite(values)
    result: list[Any] = values.tolist()
    return result


def _classified(classes: np.ndarray[Any, Any], proba: np.ndarray[Any, Any]) -> Scores:
    """classes[argmax(proba)] is what predict() does: one pass through the model, not two."""
    _check_finite(proba)
    keys = [str(c) for c in classes]
    return (
        classes.take(proba.argmax(axis=1)).tolist(),
        [dict(zip(keys, row, strict=True)) for row in proba.tolist()],
    )


def _check_finite(outputs: np.ndarray[Any, Any]) -> None:
    if not np.isfinite(outputs).all():
        raise NotScorableError("the model's output is not a finite number")
