"""The floor: the least a web service can do to answer /predict with the generated model.

A bare Starlette app with the generated project's own pieces (`load_bundle`, `Schema.frame`)
and nothing else: no request validation, no prediction log, no metrics, no access log. The
model runs inline in the event loop, which is the fastest way for one worker. The benchmark
runs it with the project's uvicorn and the same uvicorn settings as the generated service:

    BENCH_PACKAGE=<pkg> BENCH_BUNDLE_DIR=<project>/models \
        .venv/bin/python -m uvicorn floor_app:create_app --factory --app-dir benchmarks
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def create_app() -> Starlette:
    """Load the bundle named by BENCH_PACKAGE and BENCH_BUNDLE_DIR; serve /predict and /ready."""
    bundle_module = importlib.import_module(f"{os.environ['BENCH_PACKAGE']}.bundle")
    bundle = bundle_module.load_bundle(Path(os.environ["BENCH_BUNDLE_DIR"]))
    model, schema = bundle.model, bundle.schema
    classes = getattr(model, "classes_", None)

    def answer(records: list[dict[str, Any]]) -> dict[str, Any]:
        frame = schema.frame(records)
        if classes is None:
            return {"predictions": model.predict(frame).tolist(), "model_version": bundle.version}
        proba = model.predict_proba(frame)
        return {
            "predictions": classes[proba.argmax(axis=1)].tolist(),
            "model_version": bundle.version,
            "probabilities": [
                dict(zip(classes.tolist(), row, strict=True)) for row in proba.tolist()
            ],
        }

    async def predict(request: Request) -> JSONResponse:
        return JSONResponse(answer(json.loads(await request.body())["instances"]))

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ready"})

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/ready", ready)])
