"""What stands between the network and the routes, cheapest check first.

- `Guard`, before FastAPI reads anything of a request: with serving.api_key set, a POST without
  `Authorization: Bearer <key>` is answered 401 at once; then at most serving.max_concurrency
  requests are in flight per worker, the rest answered 503 with Retry-After (not queued without
  bound; /health and /metrics are never refused, so a busy worker is not restarted as dead);
  then each request is answered within serving.request_timeout seconds (408 for a client still
  sending its body, else 503). A client without the key never holds a slot or sends a body.
- `HeadAsGet`: HEAD on any GET route answers its headers, as HTTP says (FastAPI adds no HEAD).
- `short_validation_errors`: a 422 echoes at most a short prefix of a bad value, never the body.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
JSON = "application/json"
RETRY_AFTER_SECONDS = 1
UNLIMITED = ("/health", "/metrics")  # liveness and monitoring must answer under load
ECHO_CHARS = 40  # of a bad value, in a 422


class Guard:
    """Pure ASGI middleware: the API key, the requests in flight, the time each may take."""

    def __init__(
        self, app: ASGIApp, api_key: str | None, max_concurrency: int, timeout: float
    ) -> None:
        self.app, self.timeout, self.max_concurrency = app, timeout, max_concurrency
        self.api_key = api_key.encode() if api_key else None
        self.in_flight = 0  # one event loop per worker: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED:
            await self.app(scope, receive, send)
            return
        if self.api_key and scope["method"] == "POST" and not self._authorized(scope):
            detail = "Send the API key as `Authorization: Bearer <key>` (serving.api_key)."
            await _answer(send, 401, detail, [(b"www-authenticate", b"Bearer")])
            return
        if self.in_flight >= self.max_concurrency:
            await _answer(send, 503, "The service is busy: retry in a second.", RETRY)
            return
        self.in_flight += 1
        started = body_read = False

        async def receiving() -> Message:
            nonlocal body_read
            message = await receive()
            body_read = body_read or not message.get("more_body", False)
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            async with asyncio.timeout(self.timeout):
                await self.app(scope, receiving, sending)
        except TimeoutError:
            log.warning("%s %s took over %s s", scope["method"], scope["path"], self.timeout)
            if not started:
                status, waited = (503, "answer") if body_read else (408, "request body")
                retry = RETRY if status == 503 else []
                await _answer(send, status, f"No {waited} within {self.timeout:g} s.", retry)
        finally:
            self.in_flight -= 1

    def _authorized(self, scope: Scope) -> bool:
        scheme, _, given = Headers(scope=scope).get("authorization", "").partition(" ")
        # compare_digest takes as long whatever matches: the answer time tells nothing of the key.
        same = hmac.compare_digest(given.strip().encode(), self.api_key or b"")
        return scheme.lower() == "bearer" and same


class HeadAsGet:
    """Pure ASGI middleware: a HEAD request runs the GET route, and the body is not sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


async def short_validation_errors(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, with each echoed value cut short; objects and lists not echoed at all."""
    assert isinstance(exc, RequestValidationError)
    detail = [_short(error) for error in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=422)


def _short(error: dict[str, Any]) -> dict[str, Any]:
    if "input" not in error:
        return error
    error = dict(error)
    value = error.pop("input")
    if isinstance(value, str) and len(value) > ECHO_CHARS:
        error["input"] = f"{value[:ECHO_CHARS]}... ({len(value)} characters)"
    elif value is None or isinstance(value, str | int | float | bool):
        error["input"] = value
    return error


RETRY = [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())]


async def _answer(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    """A JSON answer, `{"detail": ...}` like FastAPI's own errors."""
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
