"""Prometheus metrics: requests by route and status, latency, what the model predicts, and what
the prediction log did with the rows.

`serve` points PROMETHEUS_MULTIPROC_DIR at a directory its workers share, and /metrics adds up
every worker's numbers, restarted ones included (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
import time
from collections import Counter as Tally
from collections.abc import Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Regression outputs can have any scale: 1-2.5-5 steps from 0.1 to 5000, both signs.
_STEPS = [m * 10.0**e for e in range(-1, 4) for m in (1.0, 2.5, 5.0)]
VALUE_BUCKETS = (*sorted(-s for s in _STEPS), 0.0, *_STEPS)

REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests by method, route and status.",
    ["method", "path", "status"],
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by method and route.",
    ["method", "path"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
PREDICTED_CLASSES = Counter(
    "predictions_total", "Predicted classes, by model version.", ["model_version", "label"]
)
PREDICTED_VALUES = Histogram(
    "prediction_value",
    "Predicted values, by model version.",
    ["model_version"],
    buckets=VALUE_BUCKETS,
)
LOG_ROWS = Counter(
    "prediction_log_rows_total",
    "Prediction log rows: spooled, held in memory (the spool refused them), written to the "
    "database, dropped (neither took them), quarantined (the database refuses them for good).",
    ["outcome"],
)
LOG_WAITING = Gauge(
    "prediction_log_spool_rows",
    "Rows answered and waiting in the spool for the database.",
    multiprocess_mode="livemax",
)


def observe_log(outcome: str, rows: int) -> None:
    """What the prediction log did with `rows` rows (the `observe` of its writer)."""
    if outcome == "waiting":
        LOG_WAITING.set(rows)
    else:
        LOG_ROWS.labels(outcome).inc(rows)


def observe_predictions(version: str, predictions: Sequence[str | int | float], task: str) -> None:
    if task == "classification":
        for label, count in Tally(str(p) for p in predictions).items():
            PREDICTED_CLASSES.labels(version, label).inc(count)
    else:
        values = PREDICTED_VALUES.labels(version)
        for value in predictions:
            values.observe(float(value))


def render() -> Response:
    """The /metrics answer."""
    registry = REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware): count and time every request,
    by route template, so that unknown URLs cannot blow up the number of series."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app, self.routes = app, routes  # the router's, to label what it never routed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status, root_path = time.perf_counter(), 500, scope.get("root_path", "")

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            path = self._route_path(scope, root_path)
            REQUESTS.labels(scope["method"], path, str(status)).inc()
            LATENCY.labels(scope["method"], path).observe(time.perf_counter() - start)

    def _route_path(self, scope: Scope, root_path: str) -> str:
        """The route's template (a mounted folder's own path for its files). Requests the Guard
        answered, routed on a copy of the scope (HEAD, guards.py) or by a mount (which moves
        root_path) are matched here again, as they came in."""
        route = scope.get("route")
        if route is None:
            request = {**scope, "root_path": root_path}
            known = [r for r in [*self.routes, *scope["app"].routes] if hasattr(r, "path")]
            route = next((r for r in known if r.matches(request)[0] != Match.NONE), None)
        return "unmatched" if route is None else str(route.path)
