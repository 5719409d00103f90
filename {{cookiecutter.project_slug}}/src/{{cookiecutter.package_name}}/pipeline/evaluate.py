"""How good a fitted pipeline is on held-out rows: its metrics and plots, against a model that
ignores the features, and against the champion (does it replace it?)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.pipeline import Pipeline

from ..bundle import load_bundle
from ..config import Settings
from ..metrics import is_better, primary_metric, scores
from ..processed import Split, read_split
from ..schema import Schema

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

AUC_MARGIN = 0.1  # a model "clearly better" than ignoring the features: AUC 0.6 or more
RMSE_MARGIN = 0.05
MIN_COMPARE_ROWS = 20  # fewer unseen test rows than this: no fair comparison with the champion
TRAIN_ROWS = "train_rows.npy"  # the row hashes of a run's training rows, logged with it
PROMOTE_HINT = "check it, then run `make promote` to make this model the champion"


@dataclass(frozen=True)
class Evaluation:
    """A model's metrics and diagnostic figures on one set of rows, computed once per run."""

    metrics: dict[str, float]
    figures: dict[str, Figure]
    rows: int


def evaluate(task: str, model: Pipeline, X: pd.DataFrame, y: pd.Series) -> Evaluation:
    return Evaluation(compute_metrics(task, model, X, y), plot(task, model, X, y), len(y))


def trivial_metrics(
    task: str, train: pd.DataFrame, test: pd.DataFrame, target: str
) -> dict[str, float]:
    """What a model that ignores every feature scores: the most frequent class, or the mean.
    A model has to clearly beat this to have learned anything."""
    trivial = DummyClassifier(strategy="prior") if task == "classification" else DummyRegressor()
    model = Pipeline([("model", trivial)]).fit(train.drop(columns=target), train[target])
    return compute_metrics(task, model, test.drop(columns=target), test[target])


def clearly_better(task: str, metrics: dict[str, float], trivial: dict[str, float]) -> bool:
    """Classification: ROC AUC at least 0.1 above the trivial model's 0.5 (F1 is no guide here:
    guessing at random beats always-the-majority on F1-macro). Regression: RMSE 5% lower."""
    if task == "classification":
        auc = "roc_auc" if "roc_auc" in metrics else "roc_auc_ovr"
        return metrics[auc] >= trivial[auc] + AUC_MARGIN
    return metrics["rmse"] <= trivial["rmse"] * (1 - RMSE_MARGIN)


def reason_to_keep(
    champion: Any, model: Pipeline, metrics: dict[str, float], split: Split, schema: Schema
) -> str | None:
    """Why the champion (an MLflow model version) stays, or None when `model` should replace it.
    A model on other features is not compared with it: someone checks the change first. Else
    both are scored on the test rows the champion was not trained on (all unless the data
    changed)."""
    import mlflow

    if changes := schema_changes(champion.run_id, schema):
        return f"The feature schema changed since v{champion.version} ({changes}): {PROMOTE_HINT}."
    metric = primary_metric(schema.task)
    try:
        champion_model = mlflow.sklearn.load_model(f"models:/{champion.name}/{champion.version}")
        rows_file = _logged(champion.run_id, TRAIN_ROWS)  # None: a run that logged no rows
        trained_on = np.load(rows_file) if rows_file else []
        fresh = split.test[~np.isin(row_hashes(split.test, schema), trained_on)]
        if len(fresh) < MIN_COMPARE_ROWS:
            return (
                f"only {len(fresh)} of the {len(split.test)} test rows are new to the champion, "
                f"too few (< {MIN_COMPARE_ROWS}) to compare them fairly: the data changed."
            )
        X, y = schema.model_input(fresh), fresh[schema.target]
        old = compute_metrics(schema.task, champion_model, X, y)[metric]
    except (KeyError, ValueError) as exc:
        return (
            f"Champion v{champion.version} cannot score the current data ({exc}): {PROMOTE_HINT}."
        )
    fair = len(fresh) == len(split.test)
    new = metrics[metric] if fair else compute_metrics(schema.task, model, X, y)[metric]
    if is_better(schema.task, new, old):
        return None
    return f"{metric}={new:.4f} does not beat the champion's {old:.4f} on {len(fresh)} test rows."


def schema_changes(run_id: str, schema: Schema) -> str:
    """The features added, removed or retyped since the schema a run logged ("" for none)."""
    path = _logged(run_id, "schema.json")
    if path is None:
        return ""  # a run that logged no schema
    logged = Schema.load(path)
    old = {f.name: f"{f.kind} {f.dtype}" for f in logged.features}
    new = {f.name: f"{f.kind} {f.dtype}" for f in schema.features}
    changes = {
        "added": [name for name in new if name not in old],
        "removed": [name for name in old if name not in new],
        "retyped": [f"{n} ({old[n]} -> {new[n]})" for n in new if old.get(n, new[n]) != new[n]],
    }
    return "; ".join(f"{kind}: {', '.join(names)}" for kind, names in changes.items() if names)


def row_hashes(frame: pd.DataFrame, schema: Schema) -> np.ndarray[Any, Any]:
    """One hash per row of features and target, to tell which rows a model was trained on."""
    columns = sorted([*schema.names, schema.target])
    return np.asarray(pd.util.hash_pandas_object(frame[columns], index=False))


def _logged(run_id: str, artifact: str) -> Path | None:
    """A file the run logged, downloaded; None when it logged no such file."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact))
    except (MlflowException, OSError):
        return None


def compute_metrics(task: str, model: Pipeline, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """The model's metrics on these rows (metrics.py), ROC AUC from its probabilities."""
    if task == "regression":
        return scores(task, y, model.predict(X))
    proba = model.predict_proba(X)
    predicted = model.classes_.take(proba.argmax(axis=1))
    return scores(task, y, predicted, proba, model.classes_)


def plot(task: str, model: Pipeline, X: pd.DataFrame, y: pd.Series) -> dict[str, Figure]:
    """Diagnostic figures by file name: residuals, or a confusion matrix (and a ROC curve for
    two classes)."""
    predicted = model.predict(X)
    if task == "regression":
        figure, ax = _figure("Residuals on the test set")
        skm.PredictionErrorDisplay.from_predictions(
            y, predicted, kind="residual_vs_predicted", ax=ax
        )
        return {"residuals.png": figure}
    figure, ax = _figure("Confusion matrix on the test set")
    skm.ConfusionMatrixDisplay.from_predictions(y, predicted, ax=ax, colorbar=False)
    figures = {"confusion_matrix.png": figure}
    if len(model.classes_) == 2:
        positive = model.classes_[1]
        figure, ax = _figure(f"ROC curve (positive class: {positive})")
        scores = model.predict_proba(X)[:, 1]
        skm.RocCurveDisplay.from_predictions(y, scores, pos_label=positive, ax=ax)
        figures["roc_curve.png"] = figure
    return figures


def _figure(title: str) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure  # not pyplot: no global state, no GUI backend

    figure = Figure(figsize=(5, 4))
    ax = figure.subplots()
    ax.set_title(title)
    return figure, ax


def evaluate_bundle(settings: Settings) -> dict[str, float]:
    """The `evaluate` stage: score the exported champion on the test split."""
    split, schema = read_split(settings.data.processed_dir)
    bundle = load_bundle(settings.bundle_dir)
    X, y = schema.model_input(split.test), split.test[schema.target]
    result = compute_metrics(settings.task, bundle.load_pipeline(), X, y)
    path = settings.monitoring.reports_dir / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model_version": bundle.version, "metrics": result}, indent=2))
    for name, value in result.items():
        log.info("%-12s %.4f", name, value)
    log.info("Model version %s on %d test rows -> %s", bundle.version, len(y), path)
    return result
