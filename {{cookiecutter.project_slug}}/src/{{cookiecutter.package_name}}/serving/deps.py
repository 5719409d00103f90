"""What the routes depend on, declared once as `Annotated` aliases: the service, its loaded
predictor, and a request body read within its size limit and validated in one pass.

The cheap checks come first and in the Guard middleware (guards.py): the API key and a free slot
are checked before any of these runs, so no body is read for a client that may not send one.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import Depends, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPBearer
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ..prediction_log.feedback import Label
from .guards import JSON, RETRY_AFTER_SECONDS
from .predictor import Predictor, Service
from .schemas import FeedbackRequest

# Bodies: max_batch_size rows x columns x BYTES_PER_VALUE (or items x BYTES_PER_ITEM), and slack.
BYTES_PER_VALUE = 256
BYTES_PER_ITEM = 512
SLACK_BYTES = 65_536
# A body over the limit is still read (and dropped) up to this size before the 413: a client
# that is still sending when the server answers and closes would get a reset instead.
DRAIN_BYTES = 256 * 2**20


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


async def require_json(request: Request) -> None:
    """A body sent as JSON, or 415: a web page cannot post rows with a plain cross-site form."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != JSON:
        raise HTTPException(415, detail=f"Send the body as JSON: Content-Type: {JSON}.")


# In /docs: the "Authorize" button for serving.api_key (the Guard middleware checks the key).
bearer = HTTPBearer(auto_error=False, description="serving.api_key, when it is set.")
WRITE = [Depends(bearer), Depends(require_json)]


async def read_instances(
    request: Request, service: ServiceDep, predictor: LoggingPredictorDep
) -> list[dict[str, Any]]:
    """The rows of a /predict body, validated against the schema's request model."""
    schema, batch = predictor.bundle.schema, service.settings.serving.max_batch_size
    limit = batch * (len(schema.features) + len(schema.others)) * BYTES_PER_VALUE
    body = await _read_body(request, limit + SLACK_BYTES, "instances")
    try:
        parsed = predictor.request_model.model_validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc, "instances") from None
    # Unset: an optional column (an ID, a date...) the client did not send stays out of the log.
    instances: list[dict[str, Any]] = parsed.model_dump(by_alias=True, exclude_unset=True)[
        "instances"
    ]
    return instances


InstancesDep = Annotated[list[dict[str, Any]], Depends(read_instances)]


async def read_labels(request: Request, service: ServiceDep) -> list[Label]:
    """The items of a /feedback body, at most serving.max_batch_size of them."""
    batch = service.settings.serving.max_batch_size
    body = await _read_body(request, batch * BYTES_PER_ITEM + SLACK_BYTES, "items")
    try:
        items = FeedbackRequest.model_validate_json(body).items
    except ValidationError as exc:
        raise _invalid(exc, "items") from None
    if len(items) > batch:
        raise HTTPException(413, detail=f"{len(items)} items in one request; at most {batch}.")
    return [Label(item.request_id, item.index, item.actual) for item in items]


LabelsDep = Annotated[list[Label], Depends(read_labels)]
# The model that answers is the same for every request with the same key (canary rollout).
RequestKey = Annotated[str | None, Header(alias="X-Request-Key", max_length=200)]
# Traffic of a smoke check (`make smoke`): answered and logged, but not counted by monitoring.
Traffic = Annotated[Literal["live", "smoke"], Header(alias="X-Traffic")]


async def _read_body(request: Request, limit: int, rows: str) -> bytes:
    """The body, or 413 when it is over `limit` bytes: at once when it says so in its
    Content-Length, else once that many have come (the rest is read and dropped)."""
    declared = request.headers.get("content-length", "")
    received, body = 0, bytearray()
    if not (declared.isdigit() and int(declared) > limit):
        async for chunk in request.stream():
            received += len(chunk)
            if received <= limit:
                body += chunk
            elif received > DRAIN_BYTES:
                break
    if received > limit or (declared.isdigit() and int(declared) > limit):
        raise HTTPException(413, f"Request body over {limit} bytes: send fewer {rows} per request.")
    return bytes(body)


def _invalid(exc: ValidationError, rows: str) -> HTTPException | RequestValidationError:
    """413 for a batch over the limit; otherwise FastAPI's usual 422, located in the body."""
    errors = exc.errors(include_url=False)
    for error in errors:
        if error["type"] == "too_long" and error["loc"] == (rows,):
            ctx = error.get("ctx", {})
            return HTTPException(
                413,
                detail=f"{ctx.get('actual_length')} {rows} in one request; at most "
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
