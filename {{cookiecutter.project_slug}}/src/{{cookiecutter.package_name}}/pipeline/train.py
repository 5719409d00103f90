"""Train stage: fit the candidates, gate the best against the champion, export the outcome.

The test rows are used once per model, to report its metrics and to compare it with the champion.
The orchestrator runs the three steps as tasks; `make train` runs them in a row.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import (
    BaseCrossValidator,
    KFold,
    ParameterSampler,
    StratifiedKFold,
    cross_val_score,
    train_test_split,
)
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from ..config import ConfigError, Settings
from ..metrics import HIGHER_IS_BETTER, primary_metric
from ..processed import read_split
from ..schema import Schema
from .evaluate import clearly_better, evaluate, trivial_metrics
from .features import build_pipeline
from .lifecycle import export_bundle, remove_challenger, restore
from .registry import Candidate, Promotion, Training, log_run, register, start_tracking
from .report import write_results

log = logging.getLogger(__name__)
# Each task's primary metric as scikit-learn scores it: errors negated, so that higher is better.
# CV scores are logged as the metric itself (RMSE, not -RMSE).
CV_SCORING = {"classification": "f1_macro", "regression": "neg_root_mean_squared_error"}
# OpenMP threads spin while they wait for work: on small data, or on a busy machine, extra
# threads make HistGradientBoosting many times slower (benchmarks/results).
ONE_THREAD_BELOW_VALUES = 2_000_000  # rows x features


@dataclass(frozen=True)
class CrossValidation:
    """The rows and folds every candidate is scored on, so their CV scores compare fairly."""

    X: pd.DataFrame
    y: pd.Series
    folds: BaseCrossValidator
    task: str

    def score(self, pipeline: Pipeline) -> float:
        """The primary metric, averaged over the folds."""
        scoring = CV_SCORING[self.task]
        mean = np.mean(cross_val_score(pipeline, self.X, self.y, cv=self.folds, scoring=scoring))
        return float(-mean if scoring.startswith("neg_") else mean)


def train(settings: Settings) -> Promotion:
    """The `train` stage."""
    training = fit(settings)
    promotion = gate(settings, training)
    export(settings, training, promotion)
    return promotion


def fit(settings: Settings) -> Training:
    """Baseline (the family's defaults) and tuned, each scored by CV, then fit on every
    training row, evaluated once on the test rows and logged as an MLflow run."""
    split, schema = read_split(settings.data.processed_dir)
    start_tracking(settings)
    family, seed, metric = settings.model.family, settings.random_state, primary_metric(schema.task)
    X, y = schema.model_input(split.train), split.train[schema.target]
    X_test, y_test = schema.model_input(split.test), split.test[schema.target]
    candidates = []
    with threadpool_limits(limits=training_threads(len(X), len(schema.names))):
        cv = cross_validation(settings, schema, X, y)
        baseline = cv.score(build_pipeline(schema, family, seed))
        tuned, tuned_score = tune(settings, schema, cv) or ({}, baseline)
        for name, params, score in [("baseline", {}, baseline), ("tuned", tuned, tuned_score)]:
            model = build_pipeline(schema, family, seed, params).fit(X, y)
            evaluation = evaluate(schema.task, model, X_test, y_test)
            log.info("%s: cv %s=%.4f; test %s", name, metric, score, _fmt(evaluation.metrics))
            candidates.append(Candidate(name, model, params, score, metric, len(cv.y), evaluation))
    columns = [*schema.names, schema.target]
    trivial = trivial_metrics(schema.task, split.train[columns], split.test[columns], schema.target)
    best = select_best(candidates)
    log.info("Selected %s by cross-validation (%s=%.4f).", best.name, metric, best.cv_score)
    if not clearly_better(schema.task, best.evaluation.metrics, trivial):
        log.warning(
            "%s is not clearly better than a model that ignores the features (test %s): more "
            "rows or better features may help. See the model card.",
            *(best.name, _fmt(trivial)),
        )
    for candidate in candidates:
        log_run(settings, candidate, split, schema, selected=candidate is best)
    return Training(split, schema, candidates, best, trivial)


def gate(settings: Settings, training: Training) -> Promotion:
    """Register the best candidate as @champion or @challenger (registry.register)."""
    start_tracking(settings)
    return register(settings, training.best, training.split, training.schema)


def export(settings: Settings, training: Training, promotion: Promotion) -> Path:
    """A new champion to models/ with its model card and the README's Results; otherwise the
    champion stays in models/ and the candidate goes to models/challenger/."""
    start_tracking(settings)
    if not promotion.promoted:
        if not restore(settings.bundle_dir, promotion.champion_version, promotion.champion_run_id):
            log.warning("Retrain the champion or move @champion (make mlflow-ui) to fix models/.")
        directory = export_bundle(settings, training, promotion)
        log.info(
            "Challenger v%s is in %s/: try it with serving.rollout shadow or canary.",
            *(promotion.version, directory),
        )
        return directory
    directory = export_bundle(settings, training, promotion)
    write_results(settings, training, promotion, CV_SCORING[training.schema.task])
    remove_challenger(settings)
    return directory


def cross_validation(
    settings: Settings, schema: Schema, X: pd.DataFrame, y: pd.Series
) -> CrossValidation:
    """Folds over the training rows; past `model.search_rows`, over a sample of them (ranking
    candidates needs far fewer rows than fitting the final model)."""
    classification, rows = schema.task == "classification", settings.model.search_rows
    seed = settings.random_state
    if len(X) > rows:
        log.info("Cross-validating on a sample of %d of %d rows.", rows, len(X))
        stratify = y if classification else None
        X, _, y, _ = train_test_split(X, y, train_size=rows, stratify=stratify, random_state=seed)
    splitter = StratifiedKFold if classification else KFold
    folds = splitter(n_splits=settings.model.cv, shuffle=True, random_state=seed)
    return CrossValidation(X, y, folds, schema.task)


def tune(
    settings: Settings, schema: Schema, cv: CrossValidation
) -> tuple[dict[str, Any], float] | None:
    """Randomized search over `model.search_space`: the best parameters and their CV score;
    None without a search space (the tuned candidate is then the baseline again)."""
    family, seed, metric = settings.model.family, settings.random_state, primary_metric(cv.task)
    space = settings.model.search_space.get(family, {})
    if not space:
        log.info("No search space for %s: the tuned candidate uses defaults.", family)
        return None
    sampler = list(ParameterSampler(space, n_iter=settings.model.n_iter, random_state=seed))
    scored = []
    for i, params in enumerate(sampler, start=1):
        try:
            score = cv.score(build_pipeline(schema, family, seed, params))
        except ValueError as exc:  # a name the estimator lacks, or a value it refuses
            why = re.sub(r"^[\w.]+Error: ", "", str(exc).strip().splitlines()[-1])
            raise ConfigError(f"model.search_space.{family}: cannot try {params}: {why}") from None
        log.info("Search %d/%d: cv %s=%.4f %s", i, len(sampler), metric, score, params)
        scored.append((params, score))
    sign = 1 if HIGHER_IS_BETTER[metric] else -1
    return max(scored, key=lambda pair: sign * pair[1])  # on a tie, the first


def select_best(candidates: list[Candidate]) -> Candidate:
    """The candidate with the best CV score; on a tie the simpler (earlier) one. Test metrics
    play no part: a choice made on them would make them an optimistic estimate."""
    sign = 1 if HIGHER_IS_BETTER[candidates[0].cv_scoring] else -1
    return max(candidates, key=lambda candidate: sign * candidate.cv_score)


def training_threads(rows: int, features: int) -> int | None:
    """1 for small data, else None (no limit: every core)."""
    return 1 if rows * features < ONE_THREAD_BELOW_VALUES else None


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
