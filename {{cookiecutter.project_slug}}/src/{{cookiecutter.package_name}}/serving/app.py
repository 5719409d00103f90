"""The prediction service: a FastAPI app factory; the model bundle is loaded once, in the lifespan.

Without a usable bundle the service still starts: /health answers, /ready and /predict answer 503,
and the log says once why and what to do. That is what orchestrators expect (alive, not ready).
The 503 body names the problem only: paths and URLs stay in the server log. What guards the
routes (API key, JSON only, limits, HEAD) is in guards.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError
from swagger_ui_bundle import swagger_ui_path

from .. import __version__
from ..config import Settings, get_settings
from ..errors import UserError, reason
from ..prediction_log.feedback import Label, record
from ..runtimes import NotScorableError
from .body import read_instances
from .guards import (
    RETRY_AFTER_SECONDS,
    WRITE_GUARDS,
    HeadAsGet,
    Limits,
    short_validation_errors,
)
from .predictor import Predictor
from .prometheus import MetricsMiddleware, render
from .schemas import (
    FeedbackRequest,
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
# With serving.rollout canary, requests that send the same key are answered by the same model.
REQUEST_KEY = "X-Request-Key"


@dataclass
class Service:
    """Held in app.state: the predictor once loaded, else the reason it is not."""

    settings: Settings
    predictor: Predictor | None = None
    problem: str = "The service is starting."

    async def reload(self) -> None:
        """Load models/ again beside the served model, then swap: requests under way finish
        with the old one, the next get the new one. A bundle that fails keeps the old one."""
        old = self.predictor
        prediction_log = None if old is None else old.prediction_log
        try:
            self.predictor = await run_in_threadpool(Predictor.load, self.settings, prediction_log)
        except UserError as exc:
            log.error("Reload failed, the served model stays: %s", exc)
            return
        if old is not None:
            log.info(
                "Reloaded: version %s replaces %s.",
                self.predictor.bundle.version,
                old.bundle.version,
            )
            await run_in_threadpool(old.rollout.close)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    service: Service = app.state.service
    anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
    try:
        service.predictor = Predictor.load(service.settings)
    except UserError as exc:
        service.problem = f"Not ready: {exc.public}; the server log says why."
        log.error("Not ready: %s", exc)
    _reload_on_sighup(service)
    try:
        yield
    finally:
        if service.predictor is not None:
            service.predictor.close()


def _reload_on_sighup(service: Service) -> None:
    """SIGHUP (from `serve`'s supervisor, server.py) reloads the model. Signals reach only the
    main thread: an app run elsewhere (a test client) has nothing to install."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()  # a reference, so a reload is not collected midway

    def start_reload() -> None:
        task = loop.create_task(service.reload())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    signal.signal(signal.SIGHUP, lambda signum, frame: loop.call_soon_threadsafe(start_reload))


async def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


async def get_predictor(service: ServiceDep) -> Predictor:
    if service.predictor is None:
        raise HTTPException(503, detail=service.problem)
    return service.predictor


PredictorDep = Annotated[Predictor, Depends(get_predictor)]


async def get_logging_predictor(service: ServiceDep, predictor: PredictorDep) -> Predictor:
    """With prediction_log.mode fail_closed, no answer while the log's rows do not reach its
    database (fail_open, the default, answers and keeps the rows in the spool)."""
    closed = service.settings.prediction_log.mode == "fail_closed"
    if closed and predictor.prediction_log.degraded:
        raise HTTPException(
            503,
            detail="The prediction log's database does not take rows: retry later.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return predictor


LoggingPredictorDep = Annotated[Predictor, Depends(get_logging_predictor)]


router = APIRouter()
NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"description": "Not ready (the server log says why), or busy: retry after a second."}
}
GUARDED: dict[int | str, dict[str, Any]] = {  # what WRITE_GUARDS answer
    401: {"description": "serving.api_key is set: send `Authorization: Bearer <key>`."},
    415: {"description": "The body is not sent as `Content-Type: application/json`."},
}


@router.get("/health", response_model=HealthResponse)
async def health() -> HealthResponse:
    """Liveness: the process answers."""
    return HealthResponse(status="ok")


@router.get("/ready", response_model=ReadyResponse, responses=NOT_READY)
async def ready(predictor: LoggingPredictorDep) -> ReadyResponse:
    """Readiness: the model is loaded; `prediction_log` is "degraded" while its database does
    not take rows (they wait in the spool; 503 instead with prediction_log.mode fail_closed)."""
    return ReadyResponse(
        status="ready",
        model_version=predictor.bundle.version,
        prediction_log="degraded" if predictor.prediction_log.degraded else "ok",
    )


@router.get("/metadata", response_model=MetadataResponse, responses=NOT_READY)
async def metadata(predictor: PredictorDep) -> MetadataResponse:
    """The served model: name, version, holdout metrics and feature schema."""
    meta = predictor.bundle.metadata
    challenger = predictor.rollout.challenger
    return MetadataResponse(
        name=str(meta.get("name", "")),
        version=predictor.bundle.version,
        run_id=meta.get("run_id"),
        task=predictor.bundle.schema.task,
        model_family=meta.get("model_family"),
        created_at=meta.get("created_at"),
        metrics=meta.get("metrics", {}),
        feature_schema=predictor.bundle.schema.to_dict(),
        rollout=predictor.rollout.mode,
        challenger_version=None if challenger is None else challenger.version,
    )


@router.post(
    "/predict",
    response_model=PredictResponse,
    dependencies=WRITE_GUARDS,
    responses={
        **GUARDED,
        413: {"description": "Too many instances (serving.max_batch_size) or too many bytes."},
        422: {"description": "A missing, unknown, null or mistyped feature: `loc` names it."},
        **NOT_READY,
    },
)
async def predict(request: Request, predictor: LoggingPredictorDep) -> Response:
    """Score `instances` (see the example); every row is added to the prediction log."""
    instances = await read_instances(request, predictor)
    key = request.headers.get(REQUEST_KEY)
    try:
        if len(instances) <= INLINE_ROWS:
            answer = predictor.predict(instances, key)
        else:
            answer = await run_in_threadpool(predictor.predict, instances, key)
    except NotScorableError as exc:
        raise HTTPException(
            422, detail=f"The model cannot score these values ({exc}): check for extreme numbers."
        ) from None
    # Serialized here, not by FastAPI: this hot path needs no second validation of plain
    # values (response_model still documents the answer).
    return Response(answer.model_dump_json(exclude_none=True), media_type="application/json")


@router.post(
    "/feedback",
    response_model=FeedbackResponse,
    dependencies=WRITE_GUARDS,
    responses={
        **GUARDED,
        413: {"description": "More items than serving.max_batch_size."},
        **NOT_READY,
    },
)
async def feedback(
    body: FeedbackRequest, service: ServiceDep, predictor: PredictorDep
) -> FeedbackResponse:
    """The true values of logged predictions, for live quality in `make monitor`. Sending the
    same item again changes nothing; each item that is not stored is listed with why."""
    limit = service.settings.serving.max_batch_size
    if len(body.items) > limit:
        raise HTTPException(
            413, detail=f"{len(body.items)} items in one request; at most {limit}: split them."
        )
    labels = [Label(item.request_id, item.index, item.actual) for item in body.items]
    try:
        result = await run_in_threadpool(
            record, predictor.prediction_log.engine, labels, predictor.bundle.schema
        )
    except SQLAlchemyError as exc:
        log.error("Feedback not stored: %s", reason(exc))
        raise HTTPException(
            503, detail="The prediction log's database is not available: send again later."
        ) from None
    return FeedbackResponse.model_validate(result, from_attributes=True)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus metrics."""
    content, media_type = render()
    return Response(content, media_type=media_type)


@router.get("/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    """Swagger UI: try /predict from the browser, with the real features (see below)."""
    root = request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - API docs",
        swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon-32x32.png",
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app; `serve` runs it with uvicorn (`create_app` as the factory)."""
    settings = settings or get_settings()
    app = FastAPI(
        title=settings.model.registered_name,
        version=__version__,
        summary="Predictions of the exported model; /docs shows its features.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's own /docs loads Swagger UI from a CDN; ours is local
        redoc_url=None,
    )
    app.state.service = Service(settings)
    serving = settings.serving
    app.add_middleware(
        Limits, max_concurrency=serving.max_concurrency, timeout=serving.request_timeout
    )
    app.add_middleware(HeadAsGet)
    app.add_middleware(MetricsMiddleware)  # the last added runs first: it counts every answer
    app.add_exception_handler(RequestValidationError, short_validation_errors)
    app.include_router(router)
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
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
