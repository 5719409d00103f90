"""The routes of the service: what each answers, and with which status when it cannot."""

from __future__ import annotations

import logging
import os
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from ..errors import reason
from ..prediction_log.feedback import record
from ..runtimes import NotScorableError
from .deps import WRITE, Instances, Labels, LoggingPredictorDep, PredictorDep, RequestKey, Traffic
from .prometheus import render
from .schemas import (
    FeedbackResponse,
    HealthResponse,
    MetadataResponse,
    PredictResponse,
    ReadyResponse,
)

log = logging.getLogger(__name__)
# Small batches are scored on the event loop (well under a millisecond with onnxruntime): a
# thread hop per request costs more than that. Bigger ones go to a thread so the loop stays free.
INLINE_ROWS = 64
# Threads for those batches and for database calls, as concurrent.futures would size its pool:
# more than that only costs memory (each thread keeps its own), not speed.
THREADS = min(32, (os.cpu_count() or 1) + 4)
# Swagger UI's own files, installed with the serve extra: /docs works with no internet access.
DOCS_ASSETS = "/docs-assets"

router = APIRouter()
# In /docs: what each route answers when it cannot.
NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"description": "Not ready (the server log says why), or busy: retry after a second."}
}
REFUSED: dict[int | str, dict[str, Any]] = {
    401: {"description": "serving.api_key is set: send `Authorization: Bearer <key>`."},
    413: {"description": "Too many rows (serving.max_batch_size) or too many bytes."},
    415: {"description": "The body is not sent as `Content-Type: application/json`."},
    422: {"description": "Not JSON, or a missing, unknown, null or mistyped field: `loc`."},
    **NOT_READY,
}


@router.get("/health")
async def health() -> HealthResponse:
    """Liveness: the process answers."""
    return HealthResponse(status="ok")


@router.get("/ready", responses=NOT_READY)
async def ready(predictor: LoggingPredictorDep) -> ReadyResponse:
    """Readiness: the model is loaded; `prediction_log` is "degraded" while rows do not reach
    its database (they wait in the spool; 503 instead with prediction_log.mode fail_closed)."""
    return ReadyResponse(
        status="ready",
        model_version=predictor.champion.bundle.version,
        prediction_log="degraded" if predictor.prediction_log.degraded else "ok",
    )


@router.get("/metadata", responses=NOT_READY)
async def metadata(predictor: PredictorDep) -> MetadataResponse:
    """The served model: name, version, holdout metrics and feature schema."""
    bundle, challenger = predictor.champion.bundle, predictor.challenger
    return MetadataResponse(
        name=str(bundle.metadata.get("name", "")),
        version=bundle.version,
        run_id=bundle.metadata.get("run_id"),
        task=bundle.schema.task,
        model_family=bundle.metadata.get("model_family"),
        created_at=bundle.metadata.get("created_at"),
        metrics=bundle.metadata.get("metrics", {}),
        feature_schema=bundle.schema.to_dict(),
        rollout=predictor.rollout,
        challenger_version=None if challenger is None else challenger.bundle.version,
    )


@router.post("/predict", response_model=PredictResponse, dependencies=WRITE, responses=REFUSED)
async def predict(
    predictor: LoggingPredictorDep,
    instances: Instances,
    key: RequestKey = None,
    traffic: Traffic = "live",
) -> Response:
    """Score `instances` (see the example); every row is added to the prediction log."""
    try:
        if len(instances) <= INLINE_ROWS:
            answer = predictor.predict(instances, key, traffic)
        else:
            answer = await run_in_threadpool(predictor.predict, instances, key, traffic)
    except NotScorableError as exc:
        detail = f"The model cannot score these values ({exc}): check for extreme numbers."
        raise HTTPException(422, detail=detail) from None
    # Serialized here, not by FastAPI: this hot path needs no second validation of plain
    # values (response_model still documents the answer).
    return Response(answer.model_dump_json(exclude_none=True), media_type="application/json")


@router.post("/feedback", dependencies=WRITE, responses=REFUSED)
async def feedback(predictor: PredictorDep, labels: Labels) -> FeedbackResponse:
    """The true values of logged predictions, for live quality in `make monitor`. Sending the
    same item again changes nothing; each item that is not stored is listed with why."""
    engine, schema = predictor.prediction_log.engine, predictor.champion.bundle.schema
    try:
        result = await run_in_threadpool(record, engine, labels, schema)
    except SQLAlchemyError as exc:
        log.error("Feedback not stored: %s", reason(exc))
        detail = "The prediction log's database is not available: send again later."
        raise HTTPException(503, detail=detail) from None
    return FeedbackResponse.model_validate(result, from_attributes=True)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus metrics."""
    return render()


@router.get("/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    """Swagger UI: try /predict from the browser, with the real features."""
    root = request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - API docs",
        swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon-32x32.png",
    )
