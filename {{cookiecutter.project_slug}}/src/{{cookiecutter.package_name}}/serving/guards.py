"""The Guard: what stands between the network and the routes, checked before FastAPI reads
anything of a request, cheapest first.

1. With serving.api_key set, a POST without `Authorization: Bearer <key>` is answered 401 at
   once: a client without the key never holds a slot, and its body is never read.
2. At most serving.max_concurrency requests are in flight per worker; the next ones are answered
   503 with Retry-After, not queued without bound. /health and /metrics are never refused, so a
   busy worker is not restarted as dead.
3. Each request is answered within serving.request_timeout seconds: 408 to a client still
   sending its body, else 503.

A HEAD request runs its GET route, as HTTP says (FastAPI adds no HEAD routes): the server
sends the headers of the answer without its body.
"""

from __future__ import annotations

import asyncio
import hmac
import logging

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import ServingSettings

log = logging.getLogger(__name__)
JSON = "application/json"
RETRY = {"Retry-After": "1"}  # second
UNLIMITED = ("/health", "/metrics")  # liveness and monitoring must answer under load


class Guard:
    """Pure ASGI middleware (no body is read here): the key, the slots, the time."""

    def __init__(self, app: ASGIApp, serving: ServingSettings) -> None:
        self.app, self.timeout = app, serving.request_timeout
        self.max_concurrency = serving.max_concurrency
        self.api_key = serving.api_key.get_secret_value().encode() if serving.api_key else None
        self.in_flight = 0  # one event loop per worker: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}  # a copy: the server still knows to send no body
        if scope["type"] != "http" or scope["path"] in UNLIMITED:
            await self.app(scope, receive, send)
            return
        if self.api_key and scope["method"] == "POST" and not self._authorized(scope):
            detail = "Send the API key as `Authorization: Bearer <key>` (serving.api_key)."
            response = JSONResponse({"detail": detail}, 401, {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        if self.in_flight >= self.max_concurrency:
            busy = JSONResponse({"detail": "The service is busy: retry in a second."}, 503, RETRY)
            await busy(scope, receive, send)
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
                late = JSONResponse(
                    {"detail": f"No {waited} within {self.timeout:g} s."},
                    status,
                    RETRY if status == 503 else None,
                )
                await late(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _authorized(self, scope: Scope) -> bool:
        scheme, _, given = Headers(scope=scope).get("authorization", "").partition(" ")
        # compare_digest takes as long whatever matches: the answer time tells nothing of the key.
        same = hmac.compare_digest(given.strip().encode(), self.api_key or b"")
        return scheme.lower() == "bearer" and same
