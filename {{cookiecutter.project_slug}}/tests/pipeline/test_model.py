"""Behavioural checks of the model this project trains, on the data config.yaml names.

Data-independent promises first (determinism, batch invariance, better than ignoring the
features); checks that only hold for the bundled demo datasets are skipped on other data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.pipeline import Pipeline

from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.pipeline.data import clean, infer_schema, load, split
from {{ cookiecutter.package_name }}.pipeline.evaluate import (
    clearly_better,
    compute_metrics,
    trivial_metrics,
)
from {{ cookiecutter.package_name }}.pipeline.features import build_pipeline
from {{ cookiecutter.package_name }}.processed import Split
from {{ cookiecutter.package_name }}.schema import Schema

PROJECT = Path(__file__).resolve().parents[2]
MAX_ROWS = 3000  # enough to learn from, small enough for a test
DEMO = {"builtin:breast_cancer", "builtin:diabetes"}


class Fitted:
    def __init__(self, settings: Settings, parts: Split, schema: Schema, model: Pipeline) -> None:
        self.settings, self.split, self.schema, self.model = settings, parts, schema, model
        self.X_test = schema.model_input(parts.test)
        self.y_test = parts.test[schema.target]


@pytest.fixture(scope="module")
def fitted() -> Fitted:
    settings = Settings.model_validate(yaml.safe_load((PROJECT / "config.yaml").read_text()))
    data = settings.data
    source = data.source
    if not source.startswith("builtin:") and "://" not in source:
        source = str(PROJECT / source)  # relative to the project, not to where pytest runs
    try:
        raw = load(source, data.query, data.csv_sep)
    except UserError as exc:
        pytest.skip(f"the project's data is not available here: {exc}")
    raw = raw.sample(n=min(MAX_ROWS, len(raw)), random_state=0)
    df = clean(raw, data.target, settings.task, ignore=data.drop_columns)
    schema = infer_schema(df, settings)
    parts = split(df, data.target, settings.task, data.test_size, seed=0)
    model = build_pipeline(schema, settings.model.family, random_state=0)
    model.fit(schema.model_input(parts.train), parts.train[schema.target])
    return Fitted(settings, parts, schema, model)


def test_clearly_better_than_ignoring_the_features(fitted: Fitted) -> None:
    columns = [*fitted.schema.names, fitted.schema.target]
    task, target = fitted.schema.task, fitted.schema.target
    trivial = trivial_metrics(task, fitted.split.train[columns], fitted.split.test[columns], target)
    metrics = compute_metrics(task, fitted.model, fitted.X_test, fitted.y_test)
    assert clearly_better(task, metrics, trivial), (metrics, trivial)


def assert_same(task: str, actual: np.ndarray, expected: np.ndarray) -> None:
    """Classes exactly; values up to float32 rounding (a batch may sum in another order)."""
    if task == "classification":
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_allclose(actual, expected, rtol=1e-5)


def test_training_twice_gives_the_same_predictions(fitted: Fitted) -> None:
    schema, train = fitted.schema, fitted.split.train
    again = build_pipeline(schema, fitted.settings.model.family, random_state=0)
    again.fit(schema.model_input(train), train[schema.target])
    assert_same(schema.task, again.predict(fitted.X_test), fitted.model.predict(fitted.X_test))


def test_predictions_do_not_depend_on_batch_order_or_size(fitted: Fitted) -> None:
    X, task = fitted.X_test.head(20), fitted.schema.task
    together = fitted.model.predict(X)
    one_by_one = np.concatenate([fitted.model.predict(X.iloc[[i]]) for i in range(len(X))])
    reversed_order = fitted.model.predict(X.iloc[::-1])[::-1]
    assert_same(task, together, one_by_one)
    assert_same(task, together, reversed_order)


def test_minimum_quality_on_the_demo_data(fitted: Fitted) -> None:
    if fitted.settings.data.source not in DEMO:
        pytest.skip("a bar set for the demo data; the trivial-model check covers your data")
    metrics = compute_metrics(fitted.schema.task, fitted.model, fitted.X_test, fitted.y_test)
    if fitted.schema.task == "classification":
        assert metrics["f1_macro"] >= 0.9
    else:
        # diabetes is noisy: linear models reach ~0.35 here, trees ~0.2; 0 is predicting the mean
        assert metrics["r2"] >= 0.15


def test_known_risk_factors_move_predictions_the_right_way(fitted: Fitted) -> None:
    """Demo data only: bigger tumours look more malignant (class 0); a higher BMI means more
    disease progression. Write the same kind of check for what you know of your own data."""
    if fitted.settings.data.source not in DEMO:
        pytest.skip("known directions of the demo datasets")
    X, model = fitted.X_test, fitted.model
    shifted = X.copy()
    if fitted.schema.task == "classification":
        for column in ["worst radius", "worst concave points", "mean concave points"]:
            shifted[column] = X[column] + 2 * X[column].std()
        malignant = list(model.classes_).index(0)
        before = model.predict_proba(X)[:, malignant].mean()
        after = model.predict_proba(shifted)[:, malignant].mean()
    else:
        shifted["bmi"] = X["bmi"] + 2 * X["bmi"].std()
        before, after = model.predict(X).mean(), model.predict(shifted).mean()
    assert after > before


def test_the_checks_would_catch_a_model_that_learned_nothing(fitted: Fitted) -> None:
    """The trivial-model check is not vacuous: a model fit on shuffled targets fails it."""
    schema, train = fitted.schema, fitted.split.train
    shuffled = train[schema.target].sample(frac=1, random_state=1).to_numpy()
    noise = build_pipeline(schema, fitted.settings.model.family, random_state=0)
    noise.fit(schema.model_input(train), pd.Series(shuffled, index=train.index))
    columns = [*schema.names, schema.target]
    trivial = trivial_metrics(
        schema.task, train[columns], fitted.split.test[columns], schema.target
    )
    metrics = compute_metrics(schema.task, noise, fitted.X_test, fitted.y_test)
    assert not clearly_better(schema.task, metrics, trivial)
