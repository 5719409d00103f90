"""The prediction service: a FastAPI app factory; the model bundle is loaded once, in the lifespan.

Without a usable bundle the service still starts: /health answers, /ready and /predict answer 503
(alive, not ready, as orchestrators expect), and the log says once why and what to do; paths and
URLs stay in the log. The routes are in routes.py, what they depend on in deps.py, what guards
them in guards.py.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from .. import __version__
from ..config import Settings, get_settings
from .deps import short_validation_errors
from .guards import Guard
from .predictor import Service
from .prometheus import MetricsMiddleware
from .routes import DOCS_ASSETS, THREADS, router
from .schemas import FeedbackRequest

REF = "#/components/schemas/{model}"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    service: Service = app.state.service
    anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
    service.start()
    # SIGHUP (from `serve`'s supervisor, server.py) reloads the model. Signals reach only the
    # main thread: an app run elsewhere (a test client) has nothing to install.
    if threading.current_thread() is threading.main_thread():
        reloads: set[asyncio.Task[None]] = set()  # referenced, so none is collected midway

        def reload() -> None:
            task = asyncio.create_task(service.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
    try:
        yield
    finally:
        service.stop()


class App(FastAPI):
    """FastAPI, except that the OpenAPI document also shows the bodies the write routes read
    themselves (deps.py): FeedbackRequest, and /predict's request model, which comes with the
    bundle."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is not None:
            return self.openapi_schema
        spec = super().openapi()  # kept as self.openapi_schema: completed once, here
        predictor = self.state.service.predictor
        bodies = {"/feedback": FeedbackRequest}
        if predictor is not None:
            bodies["/predict"] = predictor.request_model
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for path, model in bodies.items():
            schemas[model.__name__] = model.model_json_schema(ref_template=REF)
            schemas.update(schemas[model.__name__].pop("$defs", {}))
            content = {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}
            spec["paths"][path]["post"]["requestBody"] = {"required": True, "content": content}
        return spec


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app; `serve` runs it with uvicorn (`create_app` as the factory)."""
    settings = settings or get_settings()
    app = App(
        title=settings.model.registered_name,
        version=__version__,
        summary="Predictions of the exported model; /docs shows its features.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's own /docs loads Swagger UI from a CDN; ours is local
        redoc_url=None,
    )
    app.state.service = Service(settings)
    app.add_middleware(Guard, serving=settings.serving)
    app.add_middleware(MetricsMiddleware, routes=router.routes)  # runs first: counts every answer
    app.add_exception_handler(RequestValidationError, short_validation_errors)
    app.include_router(router)
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    return app
