"""The champion as ONNX: converted with skl2onnx, then checked against the pipeline it came from.

The check runs both serving runtimes on every test row, as JSON request rows, so it proves what
the service will answer: the same labels, and probabilities (or values) within a stated tolerance.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from ..errors import UserError
from ..runtimes import OnnxRuntime, Scores, SklearnRuntime
from ..schema import Schema

log = logging.getLogger(__name__)
# ONNX computes in float32: probabilities agree to ~1e-6 in practice; this leaves headroom.
PROBABILITY_TOLERANCE = 1e-4
# Regression values: relative to the value's size (float32 has ~7 significant digits).
RELATIVE_TOLERANCE = 1e-4
FIX = "set serving.runtime: sklearn in config.yaml to serve the pipeline itself"


class OnnxExportError(UserError):
    """The pipeline cannot be converted to ONNX, or the converted model answers differently."""


@dataclass(frozen=True)
class Parity:
    """How the ONNX model compares with the pipeline on the test rows."""

    rows: int
    max_abs_diff: float  # largest |ONNX - pipeline| over every probability (or value)
    tolerance: float
    label_agreement: float | None = None  # classifiers: share of rows with the same label
    label_ties: int = 0  # rows whose labels differ because the top two probabilities tie
    label_mismatches: int = 0  # rows whose labels differ without a tie: fails the export


def export_onnx(model: Pipeline, schema: Schema, test: pd.DataFrame) -> tuple[bytes, Parity]:
    """The ONNX model of `model` and its parity on the `test` rows; OnnxExportError when it
    cannot be converted or answers differently."""
    onnx_model = convert(model, schema)
    parity = check_parity(model, onnx_model, schema, test)
    agreement = parity.label_agreement
    log.info(
        "ONNX parity on %d test rows: max |difference| %.2g (tolerance %.0e)%s.",
        *(parity.rows, parity.max_abs_diff, parity.tolerance),
        "" if agreement is None else f", labels {agreement:.2%} the same",
    )
    return onnx_model, parity


def convert(model: Pipeline, schema: Schema) -> bytes:
    """The pipeline as ONNX: one [rows, 1] input per feature, float32 numbers, text categories."""
    from skl2onnx import convert_sklearn, get_model_alias
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    for name, step in _steps(model):
        try:
            get_model_alias(type(step))
        except RuntimeError:
            kind = type(step).__name__
            raise OnnxExportError(f"Step {name!r} ({kind}) has no ONNX converter: {FIX}.") from None
    types = {"numeric": FloatTensorType([None, 1]), "categorical": StringTensorType([None, 1])}
    initial_types = [(f.name, types[f.kind]) for f in schema.features]
    exact = with_float32_thresholds(model)
    options = (
        {id(exact.steps[-1][1]): {"zipmap": False}} if schema.task == "classification" else None
    )
    try:
        onnx_model = convert_sklearn(exact, initial_types=initial_types, options=options)
    except Exception as exc:  # skl2onnx raises many types; all mean "cannot convert"
        first_line = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        message = f"The pipeline cannot be converted to ONNX ({first_line}): {FIX}."
        raise OnnxExportError(message) from exc
    data: bytes = onnx_model.SerializeToString()
    return data


def with_float32_thresholds(model: Pipeline) -> Pipeline:
    """A copy whose tree thresholds are float32 numbers, answering as `model` on every input.

    Trees compare x <= t with t a float64 midpoint between two training values; ONNX stores t as
    the nearest float32, which may round up onto a value such as float32(50.4) and send it the
    other way. The features are float32 (`Schema.numbers`), so for every x: x <= t exactly when
    x <= t', t' the largest float32 not above t. The copy carries t', so rounding changes nothing.
    """
    exact = copy.deepcopy(model)
    estimator = exact.steps[-1][1]
    for predictors in getattr(estimator, "_predictors", []):  # HistGradientBoosting
        for predictor in predictors:
            predictor.nodes["num_threshold"] = _float32_below(predictor.nodes["num_threshold"])
    trees = np.ravel(getattr(estimator, "estimators_", [estimator]))  # forests, boosting, a tree
    for tree in trees:
        if hasattr(tree, "tree_"):
            tree.tree_.threshold[:] = _float32_below(tree.tree_.threshold)
    return exact


def _float32_below(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The largest float32 not above each value (as float64)."""
    nearest = values.astype(np.float32)
    below = np.where(nearest > values, np.nextafter(nearest, np.float32(-np.inf)), nearest)
    return below.astype(np.float64)


def check_parity(model: Pipeline, onnx_model: bytes, schema: Schema, test: pd.DataFrame) -> Parity:
    """Score the test rows with both runtimes, as the service receives them (JSON rows)."""
    import onnxruntime as ort

    rows: list[dict[str, Any]] = json.loads(test[schema.names].to_json(orient="records"))
    classes = list(getattr(model, "classes_", []))
    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    expected = SklearnRuntime(model, schema).score(rows)
    actual = OnnxRuntime(session, schema, classes).score(rows)
    parity = _compare(expected, actual, len(rows))
    if parity.max_abs_diff > parity.tolerance or parity.label_mismatches:
        raise OnnxExportError(
            f"The ONNX model answers differently from the pipeline on the test rows ({parity}): "
            f"{FIX}."
        )
    return parity


def _compare(expected: Scores, actual: Scores, rows: int) -> Parity:
    (labels, proba), (onnx_labels, onnx_proba) = expected, actual
    if proba is None or onnx_proba is None:
        values, onnx_values = np.asarray(labels, dtype=float), np.asarray(onnx_labels, dtype=float)
        scale = max(1.0, float(np.abs(values).max(initial=0.0)))
        diff = float(np.abs(values - onnx_values).max(initial=0.0))
        return Parity(rows, diff, RELATIVE_TOLERANCE * scale)
    p = np.array([list(row.values()) for row in proba])
    q = np.array([list(row.values()) for row in onnx_proba])
    same = np.array([a == b for a, b in zip(labels, onnx_labels, strict=True)])
    # A label may differ only where the pipeline's top two probabilities are within tolerance.
    top_two = np.sort(p, axis=1)[:, -2:] if p.shape[1] > 1 else np.zeros((rows, 2))
    ties = int((~same & (top_two[:, 1] - top_two[:, 0] <= PROBABILITY_TOLERANCE)).sum())
    agreement = float(same.mean()) if rows else 1.0
    diff = float(np.abs(p - q).max(initial=0.0))
    mismatches = int((~same).sum()) - ties
    return Parity(rows, diff, PROBABILITY_TOLERANCE, agreement, ties, mismatches)


def _steps(model: Any, prefix: str = "") -> Iterator[tuple[str, BaseEstimator]]:
    """Every estimator inside the pipeline, named by its path (e.g. preprocess/numeric)."""
    if isinstance(model, Pipeline):
        for name, step in model.steps:
            yield from _steps(step, f"{prefix}{name}/")
    elif isinstance(model, ColumnTransformer):
        for name, transformer, _ in model.transformers_:
            if not isinstance(transformer, str):  # "passthrough" and "drop" need no converter
                yield from _steps(transformer, f"{prefix}{name}/")
    else:
        yield prefix.rstrip("/"), model
