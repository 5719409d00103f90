"""ONNX export: every task x family converts and answers like the pipeline, on messy rows."""

import json
from dataclasses import asdict

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.preprocessing import FunctionTransformer

from conftest import TASK, make_frame
from {{ cookiecutter.package_name }}.pipeline.features import build_pipeline
from {{ cookiecutter.package_name }}.pipeline.onnx_export import (
    PROBABILITY_TOLERANCE,
    OnnxExportError,
    Parity,
    check_parity,
    export_onnx,
)
from {{ cookiecutter.package_name }}.runtimes import OnnxRuntime, SklearnRuntime
from {{ cookiecutter.package_name }}.schema import Schema

FAMILIES = ["hist_gradient_boosting", "random_forest", "linear"]
# Rows the training data never had: unseen and missing categories, missing and integer numbers.
ODD_ROWS = [
    {"age": None, "visits": 3, "plan": None, "score": 0.5},
    {"age": 40.0, "visits": 1, "plan": "enterprise", "score": -1.0},
    {"age": 120, "visits": 0, "plan": "pro", "score": None},
    {"age": -5.5, "visits": 99, "plan": "", "score": 1e30},
]


def messy_frame(task: str, seed: int) -> pd.DataFrame:
    """The shared messy data, plus a column of integer codes that is categorical (text)."""
    df = make_frame(rows=300, seed=seed, task=task)
    df["region"] = pd.Series(np.arange(len(df)) % 4, dtype=object).map(str)
    df.loc[::7, "region"] = np.nan
    return df


def fitted(task: str, family: str) -> tuple[object, Schema, pd.DataFrame]:
    train, test = messy_frame(task, seed=0), messy_frame(task, seed=1)
    schema = Schema.infer(train, "target", task)
    model = build_pipeline(schema, family, random_state=0)
    model.fit(schema.model_input(train), train["target"])
    return model, schema, test


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_every_family_converts_and_matches_the_pipeline(task: str, family: str) -> None:
    model, schema, test = fitted(task, family)

    onnx_model, parity = export_onnx(model, schema, test)

    assert parity.rows == len(test)
    assert parity.max_abs_diff <= parity.tolerance
    if task == "classification":
        assert parity.tolerance == PROBABILITY_TOLERANCE
        # Labels differ only where two classes tie (a forest's votes split evenly).
        assert parity.label_mismatches == 0
        assert parity.label_agreement == 1 - parity.label_ties / parity.rows
    else:
        assert parity.label_agreement is None
    # The rows training never saw answer the same through both serving runtimes.
    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    classes = list(getattr(model, "classes_", []))
    expected = SklearnRuntime(model, schema).score(ODD_ROWS)
    actual = OnnxRuntime(session, schema, classes).score(ODD_ROWS)
    if task == "classification":
        for mine, theirs in zip(actual[1] or [], expected[1] or [], strict=True):
            assert mine == pytest.approx(theirs, abs=PROBABILITY_TOLERANCE)
    else:
        assert actual[0] == pytest.approx(expected[0], rel=1e-4, abs=1e-4)


def test_feature_names_with_spaces_and_symbols_convert(frame: pd.DataFrame) -> None:
    renamed = frame.rename(columns={"age": "age (years)", "plan": "plan name"})
    schema = Schema.infer(renamed, "target", TASK)
    model = build_pipeline(schema, "linear", random_state=0)
    model.fit(schema.model_input(renamed), renamed["target"])

    _, parity = export_onnx(model, schema, renamed)

    assert parity.max_abs_diff <= parity.tolerance


def test_a_step_without_converter_is_named(frame: pd.DataFrame, schema: Schema) -> None:
    model = build_pipeline(schema, "linear", random_state=0)
    model.steps.insert(1, ("my_step", Unconvertible()))  # passes the features on unchanged
    model.fit(schema.model_input(frame), frame["target"])

    with pytest.raises(OnnxExportError, match=r"'my_step' \(Unconvertible\).*runtime: sklearn"):
        export_onnx(model, schema, frame)


class Unconvertible(FunctionTransformer):  # type: ignore[misc]
    """A learner's own transformer: skl2onnx has no converter for it."""


def test_a_model_that_answers_differently_fails_the_export(
    frame: pd.DataFrame, schema: Schema
) -> None:
    model = build_pipeline(schema, "linear", random_state=0)
    model.fit(schema.model_input(frame), frame["target"])
    onnx_model, _ = export_onnx(model, schema, frame)
    other = build_pipeline(schema, "linear", random_state=0)
    other.fit(schema.model_input(frame), frame["target"].sample(frac=1, random_state=0).to_numpy())

    with pytest.raises(OnnxExportError, match="answers differently"):
        check_parity(other, onnx_model, schema, frame)


def test_parity_figures_are_plain_json() -> None:
    parity = Parity(rows=10, max_abs_diff=1e-7, tolerance=1e-4, label_agreement=1.0)
    assert json.loads(json.dumps(asdict(parity)))["rows"] == 10
