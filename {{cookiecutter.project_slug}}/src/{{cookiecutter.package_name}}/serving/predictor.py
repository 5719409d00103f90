"""Scoring with the exported bundle: load it once, then turn validated rows into answers.

No web framework here: the routes hand this module plain rows and get plain values back.
`Service` is what the app holds: the predictor once it is loaded (else why it is not), swapped
for a new one on reload.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from anyio import to_thread
from pydantic import BaseModel

from ..bundle import Bundle, BundleError, load_bundle
from ..config import Settings
from ..errors import UserError
from ..prediction_log.tables import LIVE, SHADOW, PredictionRecord
from ..prediction_log.writer import PredictionLog
from ..runtimes import Runtime, load_runtime
from .prometheus import observe_log, observe_predictions
from .rollout import CHAMPION, Model, Rollout
from .schemas import PredictResponse, request_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Predictor:
    """The champion's verified bundle and the runtime that scores with it, the challenger if
    serving.rollout brings one in, and the prediction log."""

    bundle: Bundle
    runtime: Runtime
    request_model: type[BaseModel]
    prediction_log: PredictionLog
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
        runtime = load_runtime(serving.runtime, bundle)
        rollout = Rollout.load(settings, bundle)
        if prediction_log is None:
            config = settings.prediction_log
            prediction_log = PredictionLog(config.url, config.spool, observe_log)
            prediction_log.start()
        log.info(
            "Serving model %s version %s from %s/ with %s",
            bundle.metadata.get("name"),
            bundle.version,
            settings.bundle_dir,
            type(runtime).__name__,
        )
        model = request_model(bundle.schema, serving.max_batch_size)
        return cls(bundle, runtime, model, prediction_log, rollout)

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
        """Let the shadow scoring finish, then write everything waiting to the log."""
        self.rollout.close()
        self.prediction_log.close()


@dataclass
class Service:
    """What the app holds: the predictor once loaded, else the reason it is not."""

    settings: Settings
    predictor: Predictor | None = None
    problem: str = "The service is starting."

    def start(self) -> None:
        try:
            self.predictor = Predictor.load(self.settings)
        except UserError as exc:
            self.problem = f"Not ready: {exc.public}; the server log says why."
            log.error("Not ready: %s", exc)

    async def reload(self) -> None:
        """Load models/ again beside the served model, then swap: requests under way finish
        with the old one, the next get the new one. A bundle that fails keeps the old one."""
        old = self.predictor
        prediction_log = None if old is None else old.prediction_log
        try:
            self.predictor = await to_thread.run_sync(Predictor.load, self.settings, prediction_log)
        except UserError as exc:
            log.error("Reload failed, the served model stays: %s", exc)
            return
        if old is not None:
            new = self.predictor.bundle.version
            log.info("Reloaded: version %s replaces %s.", new, old.bundle.version)
            await to_thread.run_sync(old.rollout.close)

    def stop(self) -> None:
        if self.predictor is not None:
            self.predictor.close()
