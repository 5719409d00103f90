"""One sklearn Pipeline: preprocessing from the schema, then the estimator of the chosen family."""

from __future__ import annotations

from typing import Any

from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ..schema import Schema

MAX_ONE_HOT_CATEGORIES = 30


def build_estimator(
    task: str, family: str, random_state: int, params: dict[str, Any] | None = None
) -> BaseEstimator:
    classification = task == "classification"
    estimator: BaseEstimator
    if family == "hist_gradient_boosting":
        hgb = HistGradientBoostingClassifier if classification else HistGradientBoostingRegressor
        estimator = hgb(random_state=random_state)
    elif family == "random_forest":
        forest = RandomForestClassifier if classification else RandomForestRegressor
        estimator = forest(n_estimators=100, n_jobs=-1, random_state=random_state)
    elif family == "linear":
        estimator = LogisticRegression(max_iter=2000) if classification else Ridge()
    else:
        raise ValueError(f"unknown model family {family!r}")
    return estimator.set_params(**(params or {}))


def build_preprocessor(schema: Schema, family: str) -> ColumnTransformer:
    """One-hot encode categories; impute numbers, and scale them for linear models.

    Missing categories arrive as text already (`Schema.model_input` / `Schema.frame`), so the
    encoder sees them as one more category and the pipeline converts to ONNX."""
    numeric: Any = "passthrough"  # HistGradientBoosting handles missing numbers itself, faster
    if family != "hist_gradient_boosting":
        steps: list[Any] = [SimpleImputer(strategy="median", keep_empty_features=True)]
        if family == "linear":
            steps.append(StandardScaler())
        numeric = make_pipeline(*steps)
    # Past MAX_ONE_HOT_CATEGORIES the rarest share one column; a category never seen in training
    # is all zeros ("ignore": the one behaviour the ONNX converter reproduces).
    categorical = OneHotEncoder(
        handle_unknown="ignore",
        max_categories=MAX_ONE_HOT_CATEGORIES,
        sparse_output=False,
    )
    return ColumnTransformer(
        [
            ("numeric", numeric, schema.numeric),
            ("categorical", categorical, schema.categorical),
        ],
        verbose_feature_names_out=False,
    )


def build_pipeline(
    schema: Schema, family: str, random_state: int, params: dict[str, Any] | None = None
) -> Pipeline:
    """preprocess -> model; `params` are the estimator's own parameters (no `model__` prefix)."""
    return Pipeline(
        [
            ("preprocess", build_preprocessor(schema, family)),
            ("model", build_estimator(schema.task, family, random_state, params)),
        ]
    )
