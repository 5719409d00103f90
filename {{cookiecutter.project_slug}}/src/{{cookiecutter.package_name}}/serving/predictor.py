"""Scoring with the exported bundle: load it once, then turn validated rows into answers.

No web framework here: the app (app.py) hands this module plain rows and gets plain values back.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from pydantic import BaseModel

from ..bundle import Bundle, BundleError, load_bundle
from ..config import Settings
from ..store import PredictionLog, PredictionRecord
from .metrics import observe_predictions
from .schemas import PredictResponse, request_model

log = logging.getLogger(__name__)
# Request body limit: max_batch_size rows x features x BYTES_PER_VALUE, plus some slack.
BYTES_PER_VALUE = 256
BODY_SLACK_BYTES = 65_536


class NotScorableError(ValueError):
    """Valid values the model still cannot score (e.g. 1e308 overflows float32 trees)."""


@dataclass(frozen=True)
class Predictor:
    """A verified bundle, ready to score; what /predict needs."""

    bundle: Bundle
    request_model: type[BaseModel]
    prediction_log: PredictionLog
    max_body_bytes: int

    @classmethod
    def load(cls, settings: Settings) -> Predictor:
        bundle = load_bundle(settings.bundle_dir)
        if bundle.schema.task != settings.task:
            raise BundleError(
                f"{settings.bundle_dir}/ holds a {bundle.schema.task} model but config.yaml says "
                f"task: {settings.task}. Run `make train` to export a matching model."
            )
        trained_with = bundle.metadata.get("sklearn_version")
        if trained_with and trained_with != sklearn.__version__:
            log.warning(
                "The model was trained with scikit-learn %s, this is %s: retrain if in doubt.",
                trained_with,
                sklearn.__version__,
            )
        # One request is scored by one thread; parallelism comes from concurrent requests.
        params = bundle.model.get_params()
        bundle.model.set_params(**{key: 1 for key in params if key.endswith("n_jobs")})
        prediction_log = PredictionLog(settings.serving.prediction_log_url)
        prediction_log.start()
        batch = settings.serving.max_batch_size
        log.info(
            "Serving model %s version %s from %s/",
            bundle.metadata.get("name"),
            bundle.version,
            settings.bundle_dir,
        )
        return cls(
            bundle=bundle,
            request_model=request_model(bundle.schema, batch),
            prediction_log=prediction_log,
            max_body_bytes=batch * len(bundle.schema.features) * BYTES_PER_VALUE + BODY_SLACK_BYTES,
        )

    def predict(self, instances: list[dict[str, Any]]) -> PredictResponse:
        """Score validated rows, queue them for the prediction log, count them in the metrics."""
        version = self.bundle.version
        predictions, probabilities = self.score(self.bundle.schema.frame(instances))
        request_id = uuid.uuid4().hex
        created_at = datetime.now(UTC)
        self.prediction_log.log(
            [
                PredictionRecord(request_id, version, row, prediction, created_at)
                for row, prediction in zip(instances, predictions, strict=True)
            ]
        )
        observe_predictions(version, predictions, self.bundle.schema.task)
        # Built from plain Python values just above: nothing to validate again.
        return PredictResponse.model_construct(
            predictions=predictions,
            model_version=version,
            probabilities=probabilities,
            request_id=request_id,
        )

    def score(self, frame: pd.DataFrame) -> tuple[list[Any], list[dict[str, float]] | None]:
        """Predictions as JSON-ready values, and each class's probability for classifiers."""
        model = self.bundle.model
        with np.errstate(all="ignore"):  # an overflow shows as a non-finite output, checked below
            try:
                if self.bundle.schema.task != "classification":
                    values = model.predict(frame)
                    _check_finite(values)
                    return values.tolist(), None
                proba = model.predict_proba(frame)
            except ValueError as exc:  # e.g. a value beyond float32 in a tree model
                raise NotScorableError(str(exc)) from exc
        _check_finite(proba)
        classes = model.classes_
        keys = [str(c) for c in classes]
        # classes_[argmax(proba)] is what predict() does: one pass through the model, not two.
        return (
            classes.take(proba.argmax(axis=1)).tolist(),
            [dict(zip(keys, row, strict=True)) for row in proba.tolist()],
        )


def _check_finite(outputs: np.ndarray[Any, Any]) -> None:
    if not np.isfinite(outputs).all():
        raise NotScorableError("the model's output is not a finite number")
