"""What the routes depend on, declared once as `Annotated` aliases: the loaded predictor, and
the body of a write route, read within its size limit and validated in one pass.

None of these runs before the Guard (guards.py). The bodies are read here rather than by FastAPI
because the request model comes with the loaded bundle, and pydantic validates the raw JSON
faster than the parsed one.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, Header, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ValidationError

from ..prediction_log.feedback import Label
from .guards import JSON, RETRY
from .predictor import Predictor, Service
from .schemas import FeedbackRequest

# A body may hold max_batch_size rows x columns x BYTES_PER_VALUE (or items x BYTES_PER_ITEM),
# plus SLACK_BYTES. One over that is still read and dropped up to DRAIN_BYTES before the 413
# (whatever its Content-Length says): a client still sending when the server answers and closes
# would get a reset instead (urllib, for one, sends the whole body before it reads an answer).
BYTES_PER_VALUE, BYTES_PER_ITEM, SLACK_BYTES, DRAIN_BYTES = 256, 512, 65_536, 256 * 2**20
ECHO_CHARS = 40  # of a bad value, in a 422
Body = TypeVar("Body", bound=BaseModel)


async def get_predictor(request: Request) -> Predictor:
    service: Service = request.app.state.service
    if service.predictor is None:
        raise HTTPException(503, detail=service.problem)
    return service.predictor


PredictorDep = Annotated[Predictor, Depends(get_predictor)]


async def get_logging_predictor(predictor: PredictorDep) -> Predictor:
    """With prediction_log.mode fail_closed, no answer while the log's rows do not reach its
    database (fail_open, the default, answers and keeps the rows in the spool)."""
    fail_closed = predictor.settings.prediction_log.mode == "fail_closed"
    if fail_closed and predictor.prediction_log.degraded:
        detail = "The prediction log's database does not take rows: retry later."
        raise HTTPException(503, detail=detail, headers=RETRY)
    return predictor


LoggingPredictorDep = Annotated[Predictor, Depends(get_logging_predictor)]


async def require_json(request: Request) -> None:
    """A body sent as JSON, or 415: a web page cannot post rows with a plain cross-site form."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != JSON:
        raise HTTPException(415, detail=f"Send the body as JSON: Content-Type: {JSON}.")


# In /docs: the "Authorize" button for serving.api_key (the Guard checks the key).
bearer = HTTPBearer(auto_error=False, description="serving.api_key, when it is set.")
WRITE = [Depends(bearer), Depends(require_json)]


async def read_instances(request: Request, predictor: LoggingPredictorDep) -> list[dict[str, Any]]:
    """The rows of a /predict body, validated against the schema's request model."""
    schema, batch = predictor.champion.bundle.schema, predictor.settings.serving.max_batch_size
    limit = batch * (len(schema.features) + len(schema.others)) * BYTES_PER_VALUE
    parsed = await _read(request, predictor.request_model, limit, "instances")
    # Unset: an optional column (an ID, a date...) the client did not send stays out of the log.
    rows: list[dict[str, Any]] = parsed.model_dump(by_alias=True, exclude_unset=True)["instances"]
    return rows


Instances = Annotated[list[dict[str, Any]], Depends(read_instances)]


async def read_labels(request: Request, predictor: PredictorDep) -> list[Label]:
    """The items of a /feedback body, at most serving.max_batch_size of them."""
    batch = predictor.settings.serving.max_batch_size
    items = (await _read(request, FeedbackRequest, batch * BYTES_PER_ITEM, "items")).items
    if len(items) > batch:
        raise _too_many(len(items), batch, "items")
    return [Label(item.request_id, item.index, item.actual) for item in items]


Labels = Annotated[list[Label], Depends(read_labels)]
# The model that answers is the same for every request with the same key (canary rollout).
RequestKey = Annotated[str | None, Header(alias="X-Request-Key", max_length=200)]
# Traffic of a smoke check (`make smoke`): answered and logged, but not counted by monitoring.
Traffic = Annotated[Literal["live", "smoke"], Header(alias="X-Traffic")]


async def _read(request: Request, model: type[Body], limit: int, rows: str) -> Body:
    """The body validated by `model`; 413 when it is over `limit` bytes (plus SLACK_BYTES), at
    once when its Content-Length is over DRAIN_BYTES, or when it has too many `rows`; else 422."""
    limit += SLACK_BYTES
    declared = request.headers.get("content-length", "")
    too_big, received, body = declared.isdigit() and int(declared) > DRAIN_BYTES, 0, bytearray()
    if not too_big:
        async for chunk in request.stream():
            received += len(chunk)
            if received <= limit:
                body += chunk
            elif received > DRAIN_BYTES:
                break
    if too_big or received > limit:
        raise HTTPException(413, f"Request body over {limit} bytes: send fewer {rows} per request.")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        for error in errors:
            if error["type"] == "too_long" and error["loc"] == (rows,):
                sent, limit = error["ctx"]["actual_length"], error["ctx"]["max_length"]
                raise _too_many(sent, limit, rows) from None
        located = [{**error, "loc": ("body", *error["loc"])} for error in errors]
        raise RequestValidationError(located) from None


def _too_many(sent: int, limit: int, rows: str) -> HTTPException:
    detail = f"{sent} {rows} in one request; at most {limit} (serving.max_batch_size)"
    return HTTPException(413, detail=f"{detail}: split the batch.")


async def short_validation_errors(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 (the app's handler for it), each bad value echoed short."""
    assert isinstance(exc, RequestValidationError)
    detail = [_short(error) for error in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=422)


def _short(error: dict[str, Any]) -> dict[str, Any]:
    """A string cut short, NaN as text (JSON has none); the body, a row or a list not at all."""
    short = {key: value for key, value in error.items() if key != "input"}
    value = error.get("input")
    if "input" not in error or list(error["loc"]) == ["body"] or isinstance(value, dict | list):
        return short
    if isinstance(value, str) and len(value) > ECHO_CHARS:
        value = f"{value[:ECHO_CHARS]}... ({len(value)} characters)"
    elif isinstance(value, float) and not math.isfinite(value):
        value = str(value)
    return {**short, "input": value}
