"""The request model is built from the feature schema: one typed field per feature, nothing else."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from {{ cookiecutter.package_name }}.schema import Feature, Schema
from {{ cookiecutter.package_name }}.serving.schemas import example_value, request_model

ROW = {"age": 51.5, "visits": 2, "plan": "pro", "score": -0.25}


def validate(model: type[BaseModel], **changes: Any) -> list[dict[str, Any]]:
    row = {**ROW, **changes}
    parsed = model.model_validate_json(json.dumps({"instances": [row]}))
    instances: list[dict[str, Any]] = parsed.model_dump(by_alias=True)["instances"]
    return instances


def error_types(model: type[BaseModel], body: str) -> list[tuple[str, tuple[Any, ...]]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate_json(body)
    return [(e["type"], e["loc"]) for e in caught.value.errors()]


@pytest.fixture
def model(schema: Schema) -> type[BaseModel]:
    return request_model(schema, max_batch_size=3)


def test_one_field_per_feature_typed_from_the_schema(model: type[BaseModel]) -> None:
    spec = model.model_json_schema()
    instance = spec["$defs"]["Instance"]

    assert list(instance["properties"]) == ["age", "visits", "plan", "score"]
    assert instance["required"] == ["age", "visits", "plan", "score"]
    assert instance["additionalProperties"] is False
    types = {name: prop.get("type") for name, prop in instance["properties"].items()}
    assert types == {"age": None, "visits": "integer", "plan": None, "score": "number"}
    # nullable features, and only those, accept null
    assert {"type": "null"} in instance["properties"]["age"]["anyOf"]
    assert {"type": "null"} in instance["properties"]["plan"]["anyOf"]


def test_descriptions_and_examples_come_from_the_schema(
    model: type[BaseModel], schema: Schema
) -> None:
    properties = model.model_json_schema()["$defs"]["Instance"]["properties"]

    assert "basic, plus, pro" in properties["plan"]["description"]
    visits = next(f for f in schema.features if f.name == "visits")
    assert f"{visits.minimum:g} to {visits.maximum:g}" in properties["visits"]["description"]
    assert "Null when missing" in properties["age"]["description"]
    assert "Required, not null" in properties["score"]["description"]
    example = model.model_json_schema()["examples"][0]
    assert model.model_validate(example)  # the example /docs shows is a valid request


def test_a_valid_row_passes_with_its_feature_names(model: type[BaseModel]) -> None:
    assert validate(model) == [ROW]
    assert validate(model, age=None, plan=None)[0] == {**ROW, "age": None, "plan": None}


def test_integers_may_be_written_as_whole_floats(model: type[BaseModel]) -> None:
    assert validate(model, visits=3.0)[0]["visits"] == 3


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"score": None}, "float_type"),
        ({"score": "1.5"}, "float_type"),
        ({"score": True}, "float_type"),
        ({"visits": 2.5}, "int_from_float"),
        ({"visits": "2"}, "int_type"),
        ({"visits": False}, "int_type"),
        ({"plan": 3}, "string_type"),
        ({"bogus": 1}, "extra_forbidden"),
    ],
)
def test_wrong_values_are_refused(
    model: type[BaseModel], changes: dict[str, Any], error: str
) -> None:
    field = next(iter(changes))
    body = json.dumps({"instances": [{**ROW, **changes}]})

    assert error_types(model, body) == [(error, ("instances", 0, field))]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_are_refused(model: type[BaseModel], literal: str) -> None:
    body = json.dumps({"instances": [ROW]}).replace("51.5", literal)

    assert error_types(model, body) == [("finite_number", ("instances", 0, "age"))]


def test_a_missing_feature_is_named(model: type[BaseModel]) -> None:
    row = {k: v for k, v in ROW.items() if k != "plan"}

    errors = error_types(model, json.dumps({"instances": [row]}))

    assert errors == [("missing", ("instances", 0, "plan"))]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"instances": []}, ("too_short", ("instances",))),
        ({"instances": [ROW] * 4}, ("too_long", ("instances",))),
        ({"rows": [ROW]}, ("missing", ("instances",))),
        ({"instances": ROW}, ("list_type", ("instances",))),
        ({"instances": [1]}, ("model_type", ("instances", 0))),
        ([ROW], ("model_type", ())),
    ],
)
def test_the_batch_has_a_shape(
    model: type[BaseModel], body: Any, error: tuple[str, tuple[Any, ...]]
) -> None:
    assert error in error_types(model, json.dumps(body))


def test_any_column_name_works() -> None:
    """Names that are not identifiers or clash with pydantic's own attributes."""
    names = ["model_config", "class", "mean radius", "_private", "json"]
    schema = Schema(
        target="y",
        task="regression",
        features=tuple(Feature(n, "numeric", "float", nullable=False) for n in names),
    )
    model = request_model(schema, max_batch_size=10)
    row = {n: float(i) for i, n in enumerate(names)}

    parsed = model.model_validate_json(json.dumps({"instances": [row]}))

    assert parsed.model_dump(by_alias=True)["instances"] == [row]


def test_example_values() -> None:
    assert example_value(Feature("a", "numeric", "integer", False, minimum=0, maximum=5)) == 2
    assert example_value(Feature("b", "numeric", "float", False, minimum=1, maximum=2)) == 1.5
    assert example_value(Feature("c", "numeric", "float", True)) == 0
    assert example_value(Feature("d", "categorical", "string", False, ("x", "y"))) == "x"
    assert example_value(Feature("e", "categorical", "string", True)) is None
