"""MLflow: one run per candidate, registered as `@champion` or `@challenger` (champions.py keeps
the aliases; models/ is export.py)."""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.pandas_dataset import from_pandas
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.pipeline import Pipeline
from skops import io as sio

from ..config import Settings
from ..processed import Split
from ..schema import Schema
from .champions import CHALLENGER, CHAMPION, crown, version_by_alias
from .evaluate import Evaluation, compute_metrics, is_better, primary_metric

log = logging.getLogger(__name__)
TRAIN_ROWS = "train_rows.npy"  # row hashes of a run's training data
MIN_COMPARE_ROWS = 20  # fewer unseen test rows than this: no fair comparison with the champion


@dataclass
class Candidate:
    """A fitted model of this run, its CV score (what selection uses) and its test evaluation."""

    name: str
    model: Pipeline
    params: dict[str, Any]
    cv_score: float
    cv_scoring: str
    cv_rows: int
    evaluation: Evaluation
    run_id: str = ""
    model_uri: str = ""


@dataclass(frozen=True)
class Promotion:
    """The outcome of registering this run's best model: which version serves now, and why."""

    version: str  # the version registered by this run
    promoted: bool
    champion_version: str
    champion_run_id: str
    reason: str


def start_tracking(settings: Settings) -> None:
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    mlflow.set_experiment(settings.mlflow.experiment)


def log_run(
    settings: Settings, candidate: Candidate, split: Split, schema: Schema, *, selected: bool
) -> None:
    """One MLflow run per candidate: the data it saw, params, CV and test metrics, plots, the
    model with its signature, and which rows it was trained on."""
    # Prepared as the model reads rows; numbers typed float64 so MLflow's signature accepts
    # the JSON numbers `mlflow models serve` is sent (float32 would refuse them).
    example = schema.model_input(split.train.head(5)).astype(dict.fromkeys(schema.numeric, float))
    source = safe_source(settings.data.source)
    with mlflow.start_run(run_name=candidate.name) as run:
        mlflow.set_tags({"selected": str(selected).lower(), "selected_by": "cross-validation"})
        mlflow.log_params(
            {
                "family": settings.model.family,
                "cv_folds": settings.model.cv,
                "data_source": source,
                "train_rows": len(split.train),
                "test_rows": len(split.test),
                **candidate.params,
            }
        )
        mlflow.log_metrics(
            {
                f"cv_{candidate.cv_scoring}": candidate.cv_score,
                **{f"test_{k}": v for k, v in candidate.evaluation.metrics.items()},
            }
        )
        for context, frame in (("training", split.train), ("test", split.test)):
            dataset = from_pandas(  # the UI shows source, rows and a digest
                frame[[*schema.names, schema.target]],
                source=CodeDatasetSource({"data.source": source}),
                name=f"{context} rows",
                targets=schema.target,
            )
            mlflow.log_input(dataset, context=context)
        mlflow.log_dict(schema.to_dict(), "schema.json")
        with tempfile.TemporaryDirectory() as tmp:
            np.save(Path(tmp, TRAIN_ROWS), np.unique(_hashes(split.train, schema)))
            mlflow.log_artifact(str(Path(tmp, TRAIN_ROWS)))
        for file_name, figure in candidate.evaluation.figures.items():
            mlflow.log_figure(figure, f"plots/{file_name}")
        info = mlflow.sklearn.log_model(
            candidate.model,
            name="model",
            signature=infer_signature(example, candidate.model.predict(example)),
            input_example=example,
            pip_requirements=_pip_requirements(),
            skops_trusted_types=sio.get_untrusted_types(data=sio.dumps(candidate.model)),
        )
    candidate.run_id, candidate.model_uri = run.info.run_id, info.model_uri


def promote(settings: Settings, best: Candidate, split: Split, schema: Schema) -> Promotion:
    """Register `best`; it becomes `@champion` only if it beats the current champion on test
    rows that neither of them was trained on, else `@challenger` (to try on live traffic)."""
    client = MlflowClient()
    name = settings.model.registered_name
    version = str(mlflow.register_model(best.model_uri, name).version)
    champion = version_by_alias(client, name, CHAMPION)
    keep = None if champion is None else _reason_to_keep(champion, best, split, schema)
    if champion is not None and keep is not None:
        client.set_registered_model_alias(name, CHALLENGER, version)
        log.info(
            "Candidate v%s: %s Champion v%s stays; v%s is @%s.",
            version,
            keep,
            champion.version,
            version,
            CHALLENGER,
        )
        return Promotion(version, False, str(champion.version), str(champion.run_id), keep)
    crown(client, name, version)
    reason = "first model" if champion is None else f"replaces v{champion.version}"
    log.info("Model %s v%s is now @%s (%s).", name, version, CHAMPION, reason)
    return Promotion(version, True, version, best.run_id, reason)


def _reason_to_keep(champion: Any, best: Candidate, split: Split, schema: Schema) -> str | None:
    """Why the champion stays, or None when `best` should replace it. Both are scored on the
    test rows the champion was not trained on (all of them unless the data changed)."""
    metric = primary_metric(schema.task)
    try:
        model = mlflow.sklearn.load_model(f"models:/{champion.name}/{champion.version}")
        fresh = split.test[~np.isin(_hashes(split.test, schema), _trained_on(champion.run_id))]
        if len(fresh) < MIN_COMPARE_ROWS:
            return (
                f"only {len(fresh)} of the {len(split.test)} test rows are new to the champion, "
                f"too few (< {MIN_COMPARE_ROWS}) to compare them fairly: the data changed."
            )
        X, y = schema.model_input(fresh), fresh[schema.target]
        old = compute_metrics(schema.task, model, X, y)[metric]
    except (KeyError, ValueError) as exc:
        log.warning("Champion v%s cannot score the current data (%s).", champion.version, exc)
        return None
    new = (
        best.evaluation.metrics[metric]
        if len(fresh) == len(split.test)
        else compute_metrics(schema.task, best.model, X, y)[metric]
    )
    if is_better(schema.task, new, old):
        return None
    return f"{metric}={new:.4f} does not beat the champion's {old:.4f} on {len(fresh)} test rows."


def _hashes(frame: pd.DataFrame, schema: Schema) -> np.ndarray[Any, Any]:
    """One hash per row of features and target, to tell which rows a model was trained on."""
    columns = sorted([*schema.names, schema.target])
    hashes: np.ndarray[Any, Any] = pd.util.hash_pandas_object(
        frame[columns], index=False
    ).to_numpy()
    return hashes


def _trained_on(run_id: str) -> np.ndarray[Any, Any]:
    """The row hashes a run logged for its training rows (none for runs that logged none)."""
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=TRAIN_ROWS)
    except (MlflowException, OSError):
        return np.array([], dtype=np.uint64)
    hashes: np.ndarray[Any, Any] = np.load(path)
    return hashes


def mlflow_ui(settings: Settings, port: int) -> None:
    """Run the MLflow UI on the configured tracking store until interrupted."""
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri"]
    command += [settings.mlflow.tracking_uri, "--port", str(port)]
    log.info("MLflow UI on http://127.0.0.1:%d (Ctrl+C to stop)", port)
    subprocess.run(command, check=False)


def safe_source(source: str) -> str:
    """data.source without a database password."""
    if "://" not in source:
        return source
    from sqlalchemy.engine import make_url

    return make_url(source).render_as_string(hide_password=True)


def _pip_requirements() -> list[str]:
    """Pinned from this environment, so MLflow does not spend seconds inferring them."""
    return [f"{p}=={installed_version(p)}" for p in ("scikit-learn", "skops", "pandas", "numpy")]
