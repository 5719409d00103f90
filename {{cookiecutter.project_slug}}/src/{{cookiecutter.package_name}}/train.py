"""Train stage: baseline + tuned candidate as MLflow runs, registry promotion, bundle export."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.model_selection import ParameterSampler, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline
from skops import io as sio

from . import evaluate
from .bundle import save_bundle
from .config import Settings
from .data import Split, read_split
from .features import build_pipeline
from .model_card import write_model_card
from .schema import Schema

log = logging.getLogger(__name__)
CHAMPION = "champion"
CV_SCORING = {"classification": "f1_macro", "regression": "neg_root_mean_squared_error"}


@dataclass
class Candidate:
    name: str
    model: Pipeline
    params: dict[str, Any]
    metrics: dict[str, float]
    run_id: str = ""
    model_uri: str = ""


@dataclass(frozen=True)
class TrainResult:
    best: Candidate
    candidates: list[Candidate]
    version: str
    promoted: bool


def tune(settings: Settings, schema: Schema, X: pd.DataFrame, y: pd.Series) -> dict[str, Any]:
    """Randomized search over `model.search_space`, cross-validated; returns the best params."""
    space = settings.model.search_space.get(settings.model.family, {})
    if not space:
        log.info(
            "No search space for %s: the tuned candidate uses defaults.", settings.model.family
        )
        return {}
    sampler = list(
        ParameterSampler(space, n_iter=settings.model.n_iter, random_state=settings.random_state)
    )
    if len(X) > settings.model.search_rows:
        # Ranking candidates needs far fewer rows than fitting the final model.
        log.info("Searching on a sample of %d of %d rows.", settings.model.search_rows, len(X))
        stratify = y if schema.task == "classification" else None
        X, _, y, _ = train_test_split(
            X,
            y,
            train_size=settings.model.search_rows,
            stratify=stratify,
            random_state=settings.random_state,
        )
    best_params: dict[str, Any] = {}
    best_score = -np.inf
    for i, params in enumerate(sampler, start=1):
        pipeline = build_pipeline(schema, settings.model.family, settings.random_state, params)
        score = float(
            cross_val_score(
                pipeline, X, y, cv=settings.model.cv, scoring=CV_SCORING[schema.task]
            ).mean()
        )
        log.info(
            "Search %d/%d: cv %s=%.4f %s", i, len(sampler), CV_SCORING[schema.task], score, params
        )
        if score > best_score:
            best_params, best_score = params, score
    return best_params


def fit_candidates(settings: Settings, split: Split, schema: Schema) -> list[Candidate]:
    X, y = split.train[schema.names], split.train[schema.target]
    X_test, y_test = split.test[schema.names], split.test[schema.target]
    family, seed = settings.model.family, settings.random_state
    candidates = []
    for name, params in [("baseline", {}), ("tuned", tune(settings, schema, X, y))]:
        model = build_pipeline(schema, family, seed, params).fit(X, y)
        metrics = evaluate.compute_metrics(schema.task, model, X_test, y_test)
        log.info("%s: %s", name, _fmt(metrics))
        candidates.append(Candidate(name, model, params, metrics))
    return candidates


def log_run(settings: Settings, candidate: Candidate, split: Split, schema: Schema) -> None:
    """One MLflow run per candidate: params, metrics, schema, plots, model with signature."""
    X_test, y_test = split.test[schema.names], split.test[schema.target]
    example = split.train[schema.names].head(5)
    with mlflow.start_run(run_name=candidate.name) as run:
        mlflow.log_params({"family": settings.model.family, **candidate.params})
        mlflow.log_metrics(candidate.metrics)
        mlflow.log_dict(schema.to_dict(), "schema.json")
        for file_name, figure in evaluate.plot(
            schema.task, candidate.model, X_test, y_test
        ).items():
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


def promote(settings: Settings, best: Candidate, split: Split, schema: Schema) -> tuple[str, bool]:
    """Register `best`; it gets the champion alias only if it beats the champion on this holdout."""
    client = MlflowClient()
    name = settings.model.registered_name
    version = mlflow.register_model(best.model_uri, name).version
    metric = evaluate.primary_metric(schema.task)
    current = _champion_score(client, name, split, schema)
    if current is not None and not evaluate.is_better(schema.task, best.metrics[metric], current):
        log.info(
            "Candidate v%s (%s=%.4f) does not beat the champion (%.4f): champion unchanged.",
            version,
            metric,
            best.metrics[metric],
            current,
        )
        return str(version), False
    client.set_registered_model_alias(name, CHAMPION, version)
    log.info(
        "Model %s v%s is now @%s (%s=%.4f).", name, version, CHAMPION, metric, best.metrics[metric]
    )
    return str(version), True


def _champion_score(client: MlflowClient, name: str, split: Split, schema: Schema) -> float | None:
    """The current champion re-scored on today's holdout, so both are compared on the same rows."""
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    try:
        model = mlflow.sklearn.load_model(f"models:/{name}@{CHAMPION}")
        X, y = split.test[schema.names], split.test[schema.target]
        score = evaluate.compute_metrics(schema.task, model, X, y)[
            evaluate.primary_metric(schema.task)
        ]
    except (KeyError, ValueError) as exc:
        log.warning(
            "Champion v%s cannot score the current data (%s): replacing it.", champion.version, exc
        )
        return None
    return float(score)


def export_champion(
    settings: Settings, split: Split, schema: Schema, candidates: list[Candidate]
) -> Path:
    """Write the champion (maybe an older version) to models/ with a sample request and card."""
    client = MlflowClient()
    name = settings.model.registered_name
    champion = client.get_model_version_by_alias(name, CHAMPION)
    model = mlflow.sklearn.load_model(f"models:/{name}@{CHAMPION}")
    X_test, y_test = split.test[schema.names], split.test[schema.target]
    metrics = evaluate.compute_metrics(schema.task, model, X_test, y_test)
    directory = settings.bundle_dir
    save_bundle(
        model,
        directory,
        name=name,
        version=str(champion.version),
        run_id=str(champion.run_id),
        metrics=metrics,
        schema=schema,
        extra={"model_family": settings.model.family},
    )
    sample = json.loads(X_test.head(5).to_json(orient="records"))
    (directory / "sample_request.json").write_text(json.dumps({"instances": sample}, indent=2))
    figures = evaluate.plot(schema.task, model, X_test, y_test)
    for file_name, figure in figures.items():
        figure.savefig(directory / file_name, dpi=100, bbox_inches="tight")
    write_model_card(
        directory / "model_card.md",
        name=name,
        version=str(champion.version),
        schema=schema,
        split=split,
        champion_metrics=metrics,
        candidates={c.name: c.metrics for c in candidates},
        plots=sorted(figures),
    )
    log.info("Exported %s v%s to %s/", name, champion.version, directory)
    return directory


def train(settings: Settings) -> TrainResult:
    """The `train` stage."""
    split, schema = read_split(settings)
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    mlflow.set_experiment(settings.mlflow.experiment)
    candidates = fit_candidates(settings, split, schema)
    metric, higher = evaluate.PRIMARY_METRIC[schema.task]
    best = sorted(candidates, key=lambda c: c.metrics[metric], reverse=higher)[0]
    for candidate in candidates:
        log_run(settings, candidate, split, schema)
    version, promoted = promote(settings, best, split, schema)
    export_champion(settings, split, schema, candidates)
    return TrainResult(best=best, candidates=candidates, version=version, promoted=promoted)


def mlflow_ui(settings: Settings, port: int) -> None:
    """Run the MLflow UI on the configured tracking store until interrupted."""
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri"]
    command += [settings.mlflow.tracking_uri, "--port", str(port)]
    log.info("MLflow UI on http://127.0.0.1:%d (Ctrl+C to stop)", port)
    subprocess.run(command, check=False)


def _pip_requirements() -> list[str]:
    """Pinned from this environment, so MLflow does not spend seconds inferring them."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("scikit-learn", "skops", "pandas", "numpy")]


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
