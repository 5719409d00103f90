"""MLflow: one run per candidate; the best is registered as `@champion` or `@challenger`.

    @champion            the model models/ holds and the service answers with
    @challenger          a newer model that did not beat the champion; models/challenger/
    @previous-champion   the champion before this one: what `make rollback` brings back

Every change of champion is appended to the registered model's tag `champion_history` (a JSON
list of versions), so a rollback can go back more than one step and the MLflow UI shows the
history next to the aliases. models/ and promote and rollback are lifecycle.py.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.pandas_dataset import from_pandas
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.pipeline import Pipeline
from skops import io as sio
from sqlalchemy.exc import SQLAlchemyError

from ..config import Settings
from ..errors import UserError, mask_url, reason
from ..processed import Split
from ..schema import Schema
from .evaluate import TRAIN_ROWS, Evaluation, reason_to_keep, row_hashes

log = logging.getLogger(__name__)
CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous-champion"
HISTORY_TAG = "champion_history"


class TrackingError(UserError):
    """The MLflow tracking store (mlflow.tracking_uri) cannot be opened."""


@dataclass
class Candidate:
    """A fitted model of this run, its CV score (what selection uses) and its test evaluation."""

    name: str
    model: Pipeline
    params: dict[str, Any]
    cv_score: float
    cv_scoring: str  # the metric cross-validation scores: the task's primary metric
    cv_rows: int
    evaluation: Evaluation
    run_id: str = ""
    model_uri: str = ""


@dataclass(frozen=True)
class Training:
    """The candidates of one training run, the data they saw and what they are measured against:
    what `fit` leaves for `gate` and `export` (train.py)."""

    split: Split
    schema: Schema
    candidates: list[Candidate]
    best: Candidate
    trivial: dict[str, float]  # what a model that ignores the features scores on the test rows


@dataclass(frozen=True)
class Promotion:
    """The outcome of registering this run's best model: which version serves now, and why."""

    version: str  # the version registered by this run
    promoted: bool
    champion_version: str
    champion_run_id: str
    reason: str


def start_tracking(settings: Settings) -> None:
    """Point MLflow at the tracking store and experiment, without the output a learner would
    read as problems: progress bars of every download, and the version of a pip that uv's
    virtual environments do not have (the requirements are pinned: `_pip_requirements`)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
    uri = settings.mlflow.tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment(settings.mlflow.experiment)
    except (MlflowException, SQLAlchemyError, ImportError) as exc:
        raise TrackingError(
            f"Cannot open the MLflow tracking store {mask_url(uri)} (mlflow.tracking_uri): "
            f"{reason(exc)} (the default is sqlite:///mlflow.db)"
        ) from None


def log_run(
    settings: Settings, candidate: Candidate, split: Split, schema: Schema, *, selected: bool
) -> None:
    """One MLflow run per candidate: the data it saw, params, CV and test metrics, plots, the
    model with its signature, and which rows it was trained on."""
    # Prepared as the model reads rows; numbers typed float64 so MLflow's signature accepts
    # the JSON numbers `mlflow models serve` is sent (float32 would refuse them).
    example = schema.model_input(split.train.head(5)).astype(dict.fromkeys(schema.numeric, float))
    source = mask_url(settings.data.source)
    with mlflow.start_run(run_name=candidate.name) as run, warnings.catch_warnings():
        # MLflow's hint that integer columns cannot hold missing values, for each dataset and
        # signature: the service checks requests against the schema (schema.py), not MLflow.
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer")
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
        mlflow.log_metric(f"cv_{candidate.cv_scoring}", candidate.cv_score)
        mlflow.log_metrics({f"test_{k}": v for k, v in candidate.evaluation.metrics.items()})
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
            np.save(Path(tmp, TRAIN_ROWS), np.unique(row_hashes(split.train, schema)))
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


def register(settings: Settings, best: Candidate, split: Split, schema: Schema) -> Promotion:
    """Register `best`; it becomes `@champion` only if it has the champion's features and beats
    it on test rows that neither of them was trained on, else `@challenger` (to try live)."""
    client, name = MlflowClient(), settings.model.registered_name
    version = str(mlflow.register_model(best.model_uri, name).version)
    champion = version_by_alias(client, name, CHAMPION)
    if champion is not None and (
        keep := reason_to_keep(champion, best.model, best.evaluation.metrics, split, schema)
    ):
        client.set_registered_model_alias(name, CHALLENGER, version)
        log.info(
            "Candidate v%s: %s Champion v%s stays; v%s is @%s.",
            *(version, keep, champion.version, version, CHALLENGER),
        )
        return Promotion(version, False, str(champion.version), str(champion.run_id), keep)
    crown(client, name, version)
    reason = "first model" if champion is None else f"replaces v{champion.version}"
    log.info("Model %s v%s is now @%s (%s).", name, version, CHAMPION, reason)
    return Promotion(version, True, version, best.run_id, reason)


def _pip_requirements() -> list[str]:
    """Pinned from this environment, so MLflow does not spend seconds inferring them."""
    return [f"{p}=={installed_version(p)}" for p in ("scikit-learn", "skops", "pandas", "numpy")]


def version_by_alias(client: MlflowClient, name: str, alias: str) -> Any | None:
    """The ModelVersion behind `alias`, or None when no version has it (or no model exists)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def history(client: MlflowClient, name: str) -> list[str]:
    """The champion versions, oldest first (the last one serves now)."""
    tags = client.get_registered_model(name).tags
    versions: list[str] = json.loads(tags.get(HISTORY_TAG, "[]"))
    return versions


def crown(client: MlflowClient, name: str, version: str) -> None:
    """Make `version` the champion; the one it replaces becomes @previous-champion. A new
    champion also ends the old challenge: @challenger is removed."""
    versions = [v for v in history(client, name) if v != version]
    current = version_by_alias(client, name, CHAMPION)
    if current is not None and str(current.version) not in versions:
        versions.append(str(current.version))  # a champion from before the history was kept
    write_history(client, name, [*versions, version])
    remove_alias(client, name, CHALLENGER)


def remove_alias(client: MlflowClient, name: str, alias: str) -> None:
    if version_by_alias(client, name, alias) is not None:
        client.delete_registered_model_alias(name, alias)


def write_history(client: MlflowClient, name: str, versions: list[str]) -> None:
    """Record the history and point @champion and @previous-champion at its last two."""
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(versions))
    client.set_registered_model_alias(name, CHAMPION, versions[-1])
    if len(versions) > 1:
        client.set_registered_model_alias(name, PREVIOUS, versions[-2])
    else:
        remove_alias(client, name, PREVIOUS)
    log.info("Model %s: v%s is @%s.", name, versions[-1], CHAMPION)
