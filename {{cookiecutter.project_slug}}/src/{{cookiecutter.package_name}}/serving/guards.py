"""What stands between the network and the routes: write checks, load limits, HEAD.

- `WRITE_GUARDS`, on /predict and every route that changes something: the API key when
  serving.api_key is set (401), and a JSON body only (415), so a web page cannot post rows with
  a plain cross-site form.
- `Limits`: at most serving.max_concurrency requests in flight per worker, the rest answered 503
  with Retry-After at once (not queued without bound; /health and /metrics are never refused,
  so a busy worker is not restarted as dead), and each request answered within
  serving.request_timeout seconds (408 for a client still sending, else 503).
- `HeadAsGet`: HEAD on any GET route answers its headers, as HTTP says (FastAPI adds no HEAD).
- `short_validation_errors`: a 422 echoes at most a short prefix of a bad value, never the body.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
JSON = "application/json"
RETRY_AFTER_SECONDS = 1
UNLIMITED = ("/health", "/metrics")  # liveness and monitoring must answer under load
ECHO_CHARS = 40  # of a bad value, in a 422


# Declared as a security scheme: /docs gets an "Authorize" button for the key.
bearer = HTTPBearer(auto_error=False, description="serving.api_key, when it is set.")


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """With serving.api_key set, `Authorization: Bearer <key>` or 401."""
    key = request.app.state.service.settings.serving.api_key
    if key is None:
        return
    given = credentials.credentials.encode() if credentials else b""
    # compare_digest takes as long whatever matches: the answer time tells nothing of the key.
    if not hmac.compare_digest(given, key.get_secret_value().encode()):
        raise HTTPException(
            401,
            detail="Send the API key as `Authorization: Bearer <key>` (serving.api_key).",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def require_json(request: Request) -> None:
    """A body sent as JSON, or 415."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != JSON:
        raise HTTPException(415, detail=f"Send the body as JSON: Content-Type: {JSON}.")


WRITE_GUARDS = [Depends(require_api_key), Depends(require_json)]


class Limits:
    """Pure ASGI middleware: bound the requests in flight and the time each may take."""

    def __init__(self, app: ASGIApp, max_concurrency: int, timeout: float) -> None:
        self.app = app
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.in_flight = 0  # one event loop per worker: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_concurrency:
            await _answer(send, 503, "The service is busy: retry in a second.", retry=True)
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
                await _answer(
                    send, status, f"No {waited} within {self.timeout:g} s.", retry=status == 503
                )
        finally:
            self.in_flight -= 1


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


async def _answer(send: Send, status: int, detail: str, *, retry: bool) -> None:
    """A JSON answer, `{"detail": ...}` like FastAPI's own errors."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
    if retry:
        headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
