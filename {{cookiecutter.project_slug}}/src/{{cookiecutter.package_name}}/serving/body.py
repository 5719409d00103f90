"""The /predict request body: read it within a size limit, validate it against the schema's
request model, and turn validation errors into answers that name the field."""

from __future__ import annotations

import math
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from .predictor import Predictor

# A body over the limit is still read (and dropped) up to this size before the 413.
DRAIN_BYTES = 256 * 2**20


async def read_instances(request: Request, predictor: Predictor) -> list[dict[str, Any]]:
    """Parse and validate the body in one pass (pydantic's JSON parser, no NaN or Infinity)."""
    body = await _read_body(request, predictor.max_body_bytes)
    try:
        parsed = predictor.request_model.model_validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc) from None
    # Unset: an optional column (an ID, a date...) the client did not send stays out of the log.
    instances: list[dict[str, Any]] = parsed.model_dump(by_alias=True, exclude_unset=True)[
        "instances"
    ]
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
