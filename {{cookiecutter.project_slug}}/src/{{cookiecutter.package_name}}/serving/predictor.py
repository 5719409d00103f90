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
from ..prediction_log.tables import LIVE, SHADOW
from ..prediction_log.writer import PredictionLog, PredictionRecord
from ..runtimes import Runtime, load_runtime
from .prometheus import observe_log, observe_predictions
from .rollout import CHAMPION, Model, Rollout
from .schemas import PredictResponse, request_model

log = logging.getLogger(__name__)
# Request body limit: max_batch_size rows x features x BYTES_PER_VALUE, plus some slack.
BYTES_PER_VALUE = 256
BODY_SLACK_BYTES = 65_536


@dataclass(frozen=True)
class Predictor:
    """The champion's verified bundle and the runtime that scores with it, the challenger if
    serving.rollout brings one in; what /predict needs."""

    bundle: Bundle
    runtime: Runtime
    request_model: type[BaseModel]
    prediction_log: PredictionLog
    max_body_bytes: int
    rollout: Rollout

    @classmethod
    def load(cls, settings: Settings, prediction_log: PredictionLog | None = None) -> Predictor:
        """Load the bundles; open the prediction log unless a reload passes the open one."""
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
        rollout = Rollout.load(settings, bundle)
        if prediction_log is None:
            config = settings.prediction_log
            prediction_log = PredictionLog(config.url, config.spool, observe_log)
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
            rollout=rollout,
        )

    @property
    def champion(self) -> Model:
        return Model(CHAMPION, self.bundle, self.runtime)

    def predict(
        self, instances: list[dict[str, Any]], key: str | None = None, traffic: str = LIVE
    ) -> PredictResponse:
        """Score validated rows with the model the rollout picks for `key` (the request id when
        None), log them as `traffic`, count them in the metrics; with a shadow rollout, leave
        the challenger's scoring of the same rows for after the answer."""
        request_id = uuid.uuid4().hex
        created_at = datetime.now(UTC)
        model = self.rollout.answering(key or request_id) or self.champion

        def log_rows(model: Model, answers: list[Any], traffic: str) -> None:
            self.prediction_log.log(
                [
                    PredictionRecord(
                        request_id, i, model.version, row, answer, created_at, model.role, traffic
                    )
                    for i, (row, answer) in enumerate(zip(instances, answers, strict=True))
                ]
            )

        predictions, probabilities = model.runtime.score(instances)
        log_rows(model, predictions, traffic)
        observe_predictions(model.version, predictions, self.bundle.schema.task)
        self.rollout.shadow(
            lambda other: log_rows(other, other.runtime.score(instances)[0], SHADOW)
        )
        # Built from plain Python values just above: nothing to validate again.
        return PredictResponse.model_construct(
            predictions=predictions,
            model_version=model.version,
            probabilities=probabilities,
            request_id=request_id,
        )

    def close(self) -> None:
        """Let the shadow scoring finish, then write everything queued to the log."""
        self.rollout.close()
        self.prediction_log.close()
