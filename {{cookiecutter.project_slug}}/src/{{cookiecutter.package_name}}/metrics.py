"""How good a model's answers are: the one set of metrics for the holdout rows (training, the
champion gate), the live rows that got a true value (monitoring) and the challenger (compare)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from sklearn import metrics as skm

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# The metric that decides between candidates, champions and challengers, and whether higher is
# better. Classification: F1 macro, as every class counts alike; regression: RMSE, in the
# target's unit.
PRIMARY = {"classification": ("f1_macro", True), "regression": ("rmse", False)}
HIGHER_IS_BETTER = dict(PRIMARY.values())  # metric name -> whether higher is better


def primary_metric(task: str) -> str:
    return PRIMARY[task][0]


def is_better(task: str, new: float, old: float) -> bool:
    """Better on the primary metric; a tie (up to float noise) keeps what is there."""
    if math.isclose(new, old, rel_tol=1e-9, abs_tol=1e-12):
        return False
    return new > old if PRIMARY[task][1] else new < old


def drop(task: str, new: float, old: float) -> float:
    """How much worse `new` is than `old` on the primary metric, as a share of `old`."""
    worse = old - new if PRIMARY[task][1] else new - old
    return worse / (abs(old) or 1.0)


def scores(
    task: str,
    actual: pd.Series | np.ndarray[Any, Any] | list[Any],
    predicted: pd.Series | np.ndarray[Any, Any] | list[Any],
    proba: np.ndarray[Any, Any] | None = None,
    classes: np.ndarray[Any, Any] | None = None,
) -> dict[str, float]:
    """Regression: RMSE, MAE, R². Classification: accuracy, F1 macro and, given each class's
    probability (`proba`, columns in `classes` order), ROC AUC (one vs rest past two classes)."""
    if task == "regression":
        return {
            "rmse": float(skm.root_mean_squared_error(actual, predicted)),
            "mae": float(skm.mean_absolute_error(actual, predicted)),
            "r2": float(skm.r2_score(actual, predicted)),
        }
    result = {
        "accuracy": float(skm.accuracy_score(actual, predicted)),
        "f1_macro": float(skm.f1_score(actual, predicted, average="macro")),
    }
    if proba is not None and classes is not None and len(classes) == 2:
        result["roc_auc"] = float(skm.roc_auc_score(actual == classes[1], proba[:, 1]))
    elif proba is not None and classes is not None:
        auc = skm.roc_auc_score(actual, proba, multi_class="ovr", labels=classes)
        result["roc_auc_ovr"] = float(auc)
    return result


def live_scores(task: str, actual: list[Any], predicted: list[Any]) -> dict[str, float]:
    """`scores` of logged answers against the true values sent later, as JSON gives them (1 and
    "1" are the same class); no ROC AUC: the log keeps no probabilities."""
    if task == "regression":
        return scores(task, [float(a) for a in actual], [float(p) for p in predicted])
    return scores(task, [str(a) for a in actual], [str(p) for p in predicted])
