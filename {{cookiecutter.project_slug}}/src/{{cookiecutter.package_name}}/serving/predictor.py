"""Scoring with the exported bundle: load it once, then turn validated rows into answers.

No web framework here: the app (app.py) hands this module plain rows and gets plain values back.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from ..bundle import Bundle, BundleError, load_bundle
from ..config import Settings
from ..store import PredictionLog, PredictionRecord
from .metrics import observe_predictions
from .runtimes import Runtime, Scores, load_runtime
from .schemas import PredictResponse, request_model

log = logging.getLogger(__name__)
# Request body limit: max_batch_size rows x features x BYTES_PER_VALUE, plus some slack.
BYTES_PER_VALUE = 256
BODY_SLACK_BYTES = 65_536


@dataclass(frozen=True)
class Predictor:
    """A verified bundle and the runtime that scores with it; what /predict needs."""

    bundle: Bundle
    runtime: Runtime
    request_model: type[BaseModel]
    prediction_log: PredictionLog
    max_body_bytes: int

    @classmethod
    def load(cls, settings: Settings) -> Predictor:
        serving = settings.serving
        bundle = load_bundle(
            settings.bundle_dir,
            expected_sha256=serving.model_sha256,
            trusted_types=serving.trusted_types,
        )
        if bundle.schema.task != settings.task:
            raise BundleError(
                f"{settings.bundle_dir}/ holds a {bundle.schema.task} model but config.yaml says "
                f"task: {settings.task}. Run `make train` to export a matching model."
            )
        runtime = load_runtime(settings.serving.runtime, bundle)
        prediction_log = PredictionLog(settings.serving.prediction_log_url)
        prediction_log.start()
        batch = settings.serving.max_batch_size
        log.info(
            "Serving model %s version %s from %s/ with %s",
            bundle.metadata.get("name"),
            bundle.version,
            settings.bundle_dir,
            type(runtime).__name__,
        )
        return cls(
            bundle=bundle,
            runtime=runtime,
            request_model=request_model(bundle.schema, batch),
            prediction_log=prediction_log,
            max_body_bytes=batch * len(bundle.schema.features) * BYTES_PER_VALUE + BODY_SLACK_BYTES,
        )

    def predict(self, instances: list[dict[str, Any]]) -> PredictResponse:
        """Score validated rows, queue them for the prediction log, count them in the metrics."""
        version = self.bundle.version
        predictions, probabilities = self.score(instances)
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

    def score(self, instances: list[dict[str, Any]]) -> Scores:
        """Predictions as JSON-ready values, and each class's probability for classifiers."""
        return self.runtime.score(instances)
