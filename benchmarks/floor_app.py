"""The floor: the least a web service can do to answer /predict with the generated model.

A bare Starlette app with the generated project's own pieces (`load_bundle` and a runtime from
`runtimes.py`) and nothing else: no request validation, no prediction log, no metrics,
no access log. The model runs inline in the event loop, which is the fastest way for one worker.
BENCH_RUNTIME picks the runtime: onnx (onnxruntime, the default) or sklearn (the pipeline). The
benchmark runs it with the project's uvicorn and the same settings as the generated service:

    BENCH_PACKAGE=<pkg> BENCH_BUNDLE_DIR=<project>/models BENCH_RUNTIME=onnx \
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
    package = os.environ["BENCH_PACKAGE"]
    bundle_module = importlib.import_module(f"{package}.bundle")
    runtimes = importlib.import_module(f"{package}.runtimes")
    bundle = bundle_module.load_bundle(Path(os.environ["BENCH_BUNDLE_DIR"]))
    runtime = runtimes.load_runtime(os.environ.get("BENCH_RUNTIME", "onnx"), bundle)

    def answer(records: list[dict[str, Any]]) -> dict[str, Any]:
        predictions, probabilities = runtime.score(records)
        body = {"predictions": predictions, "model_version": bundle.version}
        return body if probabilities is None else {**body, "probabilities": probabilities}

    async def predict(request: Request) -> JSONResponse:
        return JSONResponse(answer(json.loads(await request.body())["instances"]))

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ready"})

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/ready", ready)])
