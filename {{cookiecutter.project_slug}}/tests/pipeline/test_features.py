import pandas as pd
import pytest

from {{ cookiecutter.package_name }}.pipeline.features import build_pipeline
from {{ cookiecutter.package_name }}.schema import Schema

FAMILIES = ["hist_gradient_boosting", "random_forest", "linear"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_every_family_fits_and_predicts_messy_rows(
    family: str, task: str, frames: dict[str, pd.DataFrame]
) -> None:
    frame = frames[task]
    schema = Schema.infer(frame, "target", task)
    model = build_pipeline(schema, family, random_state=0).fit(
        schema.model_input(frame), frame["target"]
    )
    unseen = schema.frame(
        [
            {"age": None, "visits": 3, "plan": None, "score": 0.5},
            {"age": 40.0, "visits": 1, "plan": "enterprise", "score": -1.0},
        ]
    )
    assert len(model.predict(unseen)) == 2


def test_params_reach_the_estimator(schema: Schema) -> None:
    model = build_pipeline(schema, "random_forest", random_state=0, params={"max_depth": 3})
    assert model.get_params()["model__max_depth"] == 3


def test_unknown_family_is_an_error(schema: Schema) -> None:
    with pytest.raises(ValueError, match="unknown model family"):
        build_pipeline(schema, "deep_magic", random_state=0)


def test_preprocessing_uses_exactly_the_schema_columns(schema: Schema, frame: pd.DataFrame) -> None:
    model = build_pipeline(schema, "linear", random_state=0).fit(
        schema.model_input(frame), frame["target"]
    )
    assert list(model.feature_names_in_) == schema.names
