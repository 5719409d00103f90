"""Scoring with the exported bundles, and the challenger's rollout (serving.rollout):

    off      the champion (models/) answers every request
    shadow   the champion answers; the challenger (models/challenger/) scores every live request
             too, on a thread of its own after the answer is on its way, logged as shadow traffic
    canary   serving.canary_share of requests are answered by the challenger, chosen by a hash
             of the request key (header X-Request-Key, else the request id): the same key always
             gets the same model

No web code here: the routes hand over validated rows and get plain values back. A challenger
that cannot be served leaves the champion serving alone, with a warning, never a service down.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
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
from .schemas import PredictResponse, request_model

log = logging.getLogger(__name__)
# Past this many requests waiting for the shadow thread, new ones are not shadowed: the answers
# never wait for the challenger.
MAX_SHADOW_BACKLOG = 1000


@dataclass(frozen=True)
class Model:
    """A verified bundle, the runtime that scores with it, and its role: champion or challenger."""

    role: str
    bundle: Bundle
    runtime: Runtime


def in_canary(key: str, share: float) -> bool:
    """Whether `key` falls in the first `share` of the hash space: stable across requests,
    workers and restarts, and uniform over keys."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") < share * 2**64


@dataclass(frozen=True)
class Predictor:
    champion: Model
    challenger: Model | None
    rollout: str  # serving.rollout in effect: off without a challenger
    settings: Settings  # canary_share, max_batch_size, prediction_log.mode...
    request_model: type[BaseModel]  # from the champion's schema
    prediction_log: PredictionLog
    # Its thread starts with the first job: only a shadow rollout has one.
    shadow: ThreadPoolExecutor = field(
        init=False, default_factory=lambda: ThreadPoolExecutor(1, "shadow")
    )
    backlog: threading.BoundedSemaphore = field(
        init=False, default_factory=lambda: threading.BoundedSemaphore(MAX_SHADOW_BACKLOG)
    )

    @classmethod
    def load(cls, settings: Settings, prediction_log: PredictionLog | None = None) -> Predictor:
        """Load the bundles; open the prediction log unless a reload passes the open one."""
        serving = settings.serving
        champion = _load("champion", settings.bundle_dir, settings, serving.model_sha256)
        schema = champion.bundle.schema
        if schema.task != settings.task:
            raise BundleError(
                f"{settings.bundle_dir}/ holds a {schema.task} model but config.yaml says task: "
                f"{settings.task}. Run `make train` to export a matching model."
            )
        challenger = _challenger(settings, champion)
        if prediction_log is None:
            config = settings.prediction_log
            prediction_log = PredictionLog(config.url, config.spool, observe_log)
            prediction_log.start()
        log.info(
            "Serving model %s version %s from %s/ with %s",
            champion.bundle.metadata.get("name"),
            champion.bundle.version,
            settings.bundle_dir,
            type(champion.runtime).__name__,
        )
        sample = settings.bundle_dir / "sample_request.json"
        model = request_model(schema, serving.max_batch_size, sample)
        rollout = "off" if challenger is None else serving.rollout
        return cls(champion, challenger, rollout, settings, model, prediction_log)

    def predict(
        self, instances: list[dict[str, Any]], key: str | None = None, traffic: str = LIVE
    ) -> PredictResponse:
        """Score validated rows with the model the rollout picks for `key` (the request id when
        None), log them as `traffic` and count them; a shadow rollout scores live rows with the
        challenger too, after the answer."""
        request_id, created_at = uuid.uuid4().hex, datetime.now(UTC)
        model, challenger = self.champion, self.challenger
        share = self.settings.serving.canary_share
        if self.rollout == "canary" and in_canary(key or request_id, share):
            model = challenger or model

        def log_rows(model: Model, answers: list[Any], traffic: str) -> None:
            version = model.bundle.version
            self.prediction_log.log(
                [
                    PredictionRecord(
                        request_id, i, version, row, answer, created_at, model.role, traffic
                    )
                    for i, (row, answer) in enumerate(zip(instances, answers, strict=True))
                ]
            )

        predictions, probabilities = model.runtime.score(instances)
        log_rows(model, predictions, traffic)
        observe_predictions(model.bundle.version, predictions, self.champion.bundle.schema.task)
        if self.rollout == "shadow" and challenger is not None and traffic == LIVE:
            self._in_shadow(
                lambda: log_rows(challenger, challenger.runtime.score(instances)[0], SHADOW)
            )
        # Built from plain Python values just above: nothing to validate again.
        return PredictResponse.model_construct(
            predictions=predictions,
            model_version=model.bundle.version,
            probabilities=probabilities,
            request_id=request_id,
        )

    def _in_shadow(self, job: Callable[[], None]) -> None:
        if not self.backlog.acquire(blocking=False):
            log.warning("Shadow scoring is %d requests behind: skipped one.", MAX_SHADOW_BACKLOG)
            return

        def run() -> None:
            try:
                job()
            except Exception:  # the challenger failing must never reach the champion's answers
                log.exception("Shadow scoring failed")
            finally:
                self.backlog.release()

        self.shadow.submit(run)

    def close(self) -> None:
        """Finish the shadow scoring, then write everything waiting to the log."""
        self.shadow.shutdown(wait=True)
        self.prediction_log.close()


def _load(role: str, directory: Path, settings: Settings, sha256: str | None = None) -> Model:
    trusted = settings.serving.trusted_types
    bundle = load_bundle(directory, expected_sha256=sha256, trusted_types=trusted)
    return Model(role, bundle, load_runtime(settings.serving.runtime, bundle))


def _challenger(settings: Settings, champion: Model) -> Model | None:
    """The challenger of a shadow or canary rollout, if it can be served. Nothing pins it the
    way serving.model_sha256 pins the champion, so with a pin set none is: whoever may write
    models/challenger/ must not be able to answer requests."""
    mode, directory = settings.serving.rollout, settings.challenger_dir
    if mode == "off":
        return None
    try:
        if settings.serving.model_sha256:
            raise BundleError("serving.model_sha256 pins the champion only (unset it to try one)")
        challenger = _load("challenger", directory, settings)
        if challenger.bundle.schema.names != champion.bundle.schema.names:
            raise BundleError(f"{directory}/ takes other features than the champion")
    except BundleError as exc:
        log.warning("serving.rollout is %s; serving the champion alone: %s", mode, exc)
        return None
    log.info(
        "Rollout %s: challenger version %s from %s/", mode, challenger.bundle.version, directory
    )
    return challenger


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
            new, replaced = self.predictor.champion.bundle.version, old.champion.bundle.version
            log.info("Reloaded: version %s replaces %s.", new, replaced)
            await to_thread.run_sync(old.shadow.shutdown)

    def stop(self) -> None:
        if self.predictor is not None:
            self.predictor.close()
