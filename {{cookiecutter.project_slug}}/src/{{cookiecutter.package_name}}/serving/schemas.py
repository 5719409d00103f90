"""Request and response models. The request model is built from the saved feature schema, so
/docs shows the real features and bad rows are refused before they reach the model."""

from __future__ import annotations

import json
from pathlib import Path
from types import GenericAlias
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError

from ..schema import MAX_LISTED_CATEGORIES, Feature, Schema


def _number_not_bool_or_text(value: Any) -> Any:
    """JSON has one number type, so 3.0 is a fine integer; true and "3" are not."""
    if isinstance(value, bool | str):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


# Strict types: no booleans or numeric strings for numbers, no numbers for text. NaN and
# Infinity, which JSON parsers accept as an extension, are refused by `allow_inf_nan=False`.
FEATURE_TYPES: dict[str, Any] = {
    "float": Annotated[float, Field(strict=True)],
    "integer": Annotated[int, BeforeValidator(_number_not_bool_or_text)],
    "string": Annotated[str, Field(strict=True)],
    "boolean": Annotated[bool, Field(strict=True)],
}


def example_value(feature: Feature) -> float | int | str | None:
    """A plausible value: the middle of the training range, or the first known category."""
    if feature.kind == "categorical":
        return feature.categories[0] if feature.categories else None
    low, high = feature.minimum, feature.maximum
    if low is None or high is None:
        return 0
    middle = (low + high) / 2
    return round(middle) if feature.dtype == "integer" else round(middle, 4)


def describe(feature: Feature) -> str:
    if feature.kind == "categorical":
        more = " (first ones listed)" if len(feature.categories) >= MAX_LISTED_CATEGORIES else ""
        seen = f"{', '.join(feature.categories)}{more}"
        text = f"Category seen in training: {seen}. Other values count as unseen."
    elif feature.minimum is None or feature.maximum is None:
        text = f"{feature.dtype.capitalize()}."
    else:
        seen = f"{feature.minimum:g} to {feature.maximum:g}"
        text = f"{feature.dtype.capitalize()}, {seen} in training."
    return text + (" Null when missing." if feature.nullable else " Required, not null.")


def request_model(
    schema: Schema, max_batch_size: int, sample: Path | None = None
) -> type[BaseModel]:
    """`{"instances": [row, ...]}` with 1 to `max_batch_size` rows. A row has one field per
    feature, typed from the schema, and refuses unknown keys; fields are named by alias, so any
    column name works (spaces, keywords, `model_...`).

    Its example in /docs is the first row of `sample` (sample_request.json, held-out rows `make
    train` writes next to the bundle) when it is valid; else each feature's own example, which
    together may make a row that never occurs."""
    fields: dict[str, Any] = {}
    for i, feature in enumerate(schema.features):
        annotation = FEATURE_TYPES[feature.dtype]
        if feature.nullable:
            annotation = annotation | None
        examples = [example_value(feature)]
        field = Field(alias=feature.name, description=describe(feature), examples=examples)
        fields[f"feature_{i}"] = (annotation, field)
    for i, other in enumerate(schema.others):
        description = (
            f"Optional, not used by the model ({other.role}: {other.reason}); "
            "kept in the prediction log when sent."
        )
        fields[f"other_{i}"] = (
            str | int | float | bool | None,
            Field(None, alias=other.name, description=description),
        )
    config = ConfigDict(extra="forbid", allow_inf_nan=False)
    instance = create_model("Instance", __config__=config, **fields)
    try:
        example: Any = json.loads(sample.read_text())["instances"][0] if sample else None
        instance.model_validate(example)
    except (OSError, ValueError, LookupError, TypeError):  # pydantic's ValidationError included
        example = {f.name: example_value(f) for f in schema.features}
    config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"instances": [example]}]})
    rows: Any = GenericAlias(list, instance)  # list[Instance]
    description = f"Rows to score, 1 to {max_batch_size} (serving.max_batch_size)."
    limits = Field(min_length=1, max_length=max_batch_size, description=description)
    model: type[BaseModel] = create_model(
        "PredictRequest", __config__=config, instances=(rows, limits)
    )
    return model


class PredictResponse(BaseModel):
    predictions: list[str | int | float] = Field(
        description="One per instance, in order: the class (classification) or the value."
    )
    model_version: str = Field(description="Registry version of the model that answered.")
    probabilities: list[dict[str, float]] | None = Field(
        default=None, description="Classifiers only: per instance, each class's probability."
    )
    request_id: str = Field(description="Logged with every row of this request.")


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        min_length=1, max_length=100, description="The `request_id` of the /predict answer."
    )
    index: int | None = Field(
        default=None,
        ge=0,
        description="The row's position in that request; may be left out for a one-row request.",
    )
    actual: Any = Field(
        description="The true value: one of the model's classes, or a number for regression.",
        examples=[0],
    )


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[FeedbackItem] = Field(min_length=1, description="True values of logged rows.")


class FeedbackIssue(BaseModel):
    request_id: str
    index: int | None
    reason: str | None = None


class FeedbackResponse(BaseModel):
    accepted: int = Field(description="New labels stored.")
    duplicates: int = Field(description="Labels already stored, sent again: nothing changed.")
    conflicts: list[FeedbackIssue] = Field(
        description="Rows already labelled differently: the first label is kept."
    )
    unknown: list[FeedbackIssue] = Field(
        description="No such logged row (yet: the log is written a moment after the answer)."
    )
    invalid: list[FeedbackIssue] = Field(description="Not a valid true value; `reason` says why.")


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    status: str
    model_version: str
    prediction_log: Literal["ok", "degraded"] = "ok"


class MetadataResponse(BaseModel):
    name: str
    version: str
    run_id: str | None = None
    task: str
    model_family: str | None = None
    created_at: str | None = None
    metrics: dict[str, Any]
    feature_schema: dict[str, Any] = Field(serialization_alias="schema")
    rollout: str = "off"  # serving.rollout in effect: off when there is no challenger
    challenger_version: str | None = None
