"""The prediction service: a FastAPI app factory; the model bundle is loaded once, in the lifespan.

Without a usable bundle the service still starts: /health answers, /ready and /predict answer 503
with what to do, and the log says it once. That is what orchestrators expect (alive, not ready).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
import pandas as pd
import sklearn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .. import __version__
from ..bundle import Bundle, BundleError, load_bundle
from ..config import Settings, UserError, get_settings
from ..store import PredictionLog, PredictionRecord
from .metrics import MetricsMiddleware, observe_predictions, render
from .schemas import (
    HealthResponse,
    MetadataResponse,
    PredictResponse,
    ReadyResponse,
    request_model,
)

log = logging.getLogger(__name__)
# Request body limit: max_batch_size rows x features x BYTES_PER_VALUE, plus some slack.
BYTES_PER_VALUE = 256
DRAIN_BYTES = 256 * 2**20
# Small batches are scored on the event loop (~2 ms): a thread hop per request costs more than
# that once 16 requests fight over the GIL. Bigger ones go to a thread so the loop stays free.
INLINE_ROWS = 64
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


@dataclass
class Service:
    """Held in app.state: the predictor once loaded, else the reason it is not."""

    settings: Settings
    predictor: Predictor | None = None
    problem: str = "The service is starting."


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    service: Service = app.state.service
    try:
        service.predictor = Predictor.load(service.settings)
    except UserError as exc:
        service.problem = str(exc)
        log.error("Not ready: %s", exc)
    try:
        yield
    finally:
        if service.predictor is not None:
            service.predictor.prediction_log.close()


async def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


async def get_predictor(service: ServiceDep) -> Predictor:
    if service.predictor is None:
        raise HTTPException(503, detail=service.problem)
    return service.predictor


PredictorDep = Annotated[Predictor, Depends(get_predictor)]


async def _read_instances(request: Request, predictor: Predictor) -> list[dict[str, Any]]:
    """Parse and validate the body in one pass (pydantic's JSON parser, no NaN or Infinity)."""
    body = await _read_body(request, predictor.max_body_bytes)
    try:
        parsed = predictor.request_model.model_validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc) from None
    instances: list[dict[str, Any]] = parsed.model_dump(by_alias=True)["instances"]
    return instances


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, up to `limit` bytes. A larger one is still read (and dropped) up to
    DRAIN_BYTES before the 413: a client that is still sending when the server answers and
    closes gets a connection reset instead of the 413."""
    body = bytearray()
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received <= limit:
            body += chunk
        elif received > DRAIN_BYTES:
            break
    if received > limit:
        raise HTTPException(
            413, detail=f"Request body over {limit} bytes: send fewer instances per request."
        )
    return bytes(body)


def _invalid(exc: ValidationError) -> HTTPException | RequestValidationError:
    """413 for a batch over the limit; otherwise FastAPI's usual 422, located in the body."""
    errors = exc.errors(include_url=False)
    for error in errors:
        if error["type"] == "too_long" and error["loc"] == ("instances",):
            ctx = error.get("ctx", {})
            return HTTPException(
                413,
                detail=f"{ctx.get('actual_length')} instances in one request; at most "
                f"{ctx.get('max_length')} (serving.max_batch_size): split the batch.",
            )
    return RequestValidationError([_located(error) for error in errors])


def _located(error: ErrorDetails) -> dict[str, Any]:
    """Echo only a field's own value (not rows, not the body), and NaN as text: JSON has none."""
    located: dict[str, Any] = {**error, "loc": ("body", *error["loc"])}
    value = located.pop("input", None)
    if not error["loc"] or isinstance(value, dict | list) or "input" not in error:
        return located
    located["input"] = (
        str(value) if isinstance(value, float) and not math.isfinite(value) else value
    )
    return located


router = APIRouter()
NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"description": "No usable model bundle: the detail says what to do."}
}


@router.get("/health", response_model=HealthResponse)
async def health() -> HealthResponse:
    """Liveness: the process answers."""
    return HealthResponse(status="ok")


@router.get("/ready", response_model=ReadyResponse, responses=NOT_READY)
async def ready(predictor: PredictorDep) -> ReadyResponse:
    """Readiness: the model is loaded and the prediction log is open."""
    return ReadyResponse(status="ready", model_version=predictor.bundle.version)


@router.get("/metadata", response_model=MetadataResponse, responses=NOT_READY)
async def metadata(predictor: PredictorDep) -> MetadataResponse:
    """The served model: name, version, holdout metrics and feature schema."""
    meta = predictor.bundle.metadata
    return MetadataResponse(
        name=str(meta.get("name", "")),
        version=predictor.bundle.version,
        run_id=meta.get("run_id"),
        task=predictor.bundle.schema.task,
        model_family=meta.get("model_family"),
        created_at=meta.get("created_at"),
        metrics=meta.get("metrics", {}),
        feature_schema=predictor.bundle.schema.to_dict(),
    )


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses={
        413: {"description": "Too many instances (serving.max_batch_size) or too many bytes."},
        422: {"description": "A missing, unknown, null or mistyped feature: `loc` names it."},
        **NOT_READY,
    },
)
async def predict(request: Request, predictor: PredictorDep) -> Response:
    """Score `instances` (see the example); every row is added to the prediction log."""
    instances = await _read_instances(request, predictor)
    try:
        if len(instances) <= INLINE_ROWS:
            answer = predictor.predict(instances)
        else:
            answer = await run_in_threadpool(predictor.predict, instances)
    except NotScorableError as exc:
        raise HTTPException(
            422, detail=f"The model cannot score these values ({exc}): check for extreme numbers."
        ) from None
    # Serialized here, not by FastAPI: this hot path needs no second validation of plain
    # values (response_model still documents the answer).
    return Response(answer.model_dump_json(exclude_none=True), media_type="application/json")


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus metrics."""
    content, media_type = render()
    return Response(content, media_type=media_type)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app; `serve` runs it with uvicorn (`create_app` as the factory)."""
    settings = settings or get_settings()
    app = FastAPI(
        title=settings.model.registered_name,
        version=__version__,
        summary="Predictions of the exported model; /docs shows its features.",
        lifespan=lifespan,
    )
    app.state.service = Service(settings)
    app.add_middleware(MetricsMiddleware)
    app.include_router(router)
    app.openapi = _openapi_with_features(app)  # type: ignore[method-assign]
    return app


def _openapi_with_features(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The request model exists once the bundle is loaded, so /predict's body is added to the
    OpenAPI document (built on first request, after the lifespan) from the loaded schema."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()
            predictor = app.state.service.predictor
            if predictor is not None:
                model = predictor.request_model
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas = spec.setdefault("components", {}).setdefault("schemas", {})
                schemas.update(body.pop("$defs", {}))
                schemas[model.__name__] = body
                spec["paths"]["/predict"]["post"]["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": f"#/components/schemas/{model.__name__}"}
                        }
                    },
                }
            app.openapi_schema = spec
        return app.openapi_schema

    return openapi
