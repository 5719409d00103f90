"""Train stage: fit the candidates, gate the best against the champion, export the outcome.

    fit      a baseline and a tuned candidate, chosen between by cross-validation on the training
             rows only (the same folds for both); each is an MLflow run
    gate     the best is registered; it becomes @champion only if it beats the champion on test
             rows neither was trained on, else @challenger (registry.py)
    export   a new champion to models/ (with its model card and the README's Results), a
             challenger to models/challenger/, for the service to try on live traffic

The test rows are used once per model, to report its metrics and to compare it with the champion.
The orchestrator runs the three steps as tasks; `make train` runs them in a row.
"""

from __future__ import annotations

import logging
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

from ..config import Settings
from ..processed import Split, read_split
from ..schema import Schema
from .evaluate import clearly_better, evaluate, trivial_metrics
from .export import export_bundle, remove_challenger, restore_bundle, store_with_run
from .features import build_pipeline
from .registry import Candidate, Promotion, Training, log_run, register, start_tracking
from .report import results_section, write_model_card, write_results

log = logging.getLogger(__name__)
# What cross-validation maximises: the primary metric of each task, signed so higher is better.
CV_SCORING = {"classification": "f1_macro", "regression": "neg_root_mean_squared_error"}
# OpenMP threads spin while they wait for work: on small data, or on a busy machine, extra
# threads make HistGradientBoosting many times slower (benchmarks/results). Below this many
# values (rows x features) training uses one thread.
ONE_THREAD_BELOW_VALUES = 2_000_000


@dataclass(frozen=True)
class CrossValidation:
    """The rows and folds every candidate is scored on, so their CV scores compare fairly."""

    X: pd.DataFrame
    y: pd.Series
    folds: BaseCrossValidator
    scoring: str

    def score(self, pipeline: Pipeline) -> float:
        scores = cross_val_score(pipeline, self.X, self.y, cv=self.folds, scoring=self.scoring)
        return float(np.mean(scores))


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
    with threadpool_limits(limits=training_threads(len(split.train), len(schema.names))):
        candidates = fit_candidates(settings, split, schema)
    columns = [*schema.names, schema.target]
    trivial = trivial_metrics(schema.task, split.train[columns], split.test[columns], schema.target)
    best = select_best(candidates)
    log.info(
        "Selected %s by cross-validation (%s=%.4f).", best.name, best.cv_scoring, best.cv_score
    )
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
    """Register the best candidate: the champion only if it beats the current one."""
    start_tracking(settings)
    return register(settings, training.best, training.split, training.schema)


def export(settings: Settings, training: Training, promotion: Promotion) -> Path:
    """A new champion to models/ with its model card and the README's Results; otherwise the
    champion stays in models/ and the candidate goes to models/challenger/."""
    start_tracking(settings)
    if not promotion.promoted:
        restore_bundle(settings, promotion)
        directory, _ = export_bundle(settings, training, promotion, settings.challenger_dir)
        store_with_run(directory, training.best.run_id)
        log.info(
            "Challenger v%s is in %s/: try it with serving.rollout shadow or canary.",
            *(promotion.version, directory),
        )
        return directory
    directory, parity = export_bundle(settings, training, promotion, settings.bundle_dir)
    write_model_card(directory / "model_card.md", settings, training, promotion, parity)
    store_with_run(directory, training.best.run_id)
    section = results_section(settings, training, promotion, directory, CV_SCORING)
    if write_results(Path("README.md"), section):
        log.info("README.md: the Results section now shows v%s.", promotion.version)
    remove_challenger(settings)
    return directory


def cross_validation(
    settings: Settings, schema: Schema, X: pd.DataFrame, y: pd.Series
) -> CrossValidation:
    """Folds over the training rows; past `model.search_rows`, over a sample of them (ranking
    candidates needs far fewer rows than fitting the final model)."""
    classification = schema.task == "classification"
    rows = settings.model.search_rows
    if len(X) > rows:
        log.info("Cross-validating on a sample of %d of %d rows.", rows, len(X))
        stratify = y if classification else None
        seed = settings.random_state
        X, _, y, _ = train_test_split(X, y, train_size=rows, stratify=stratify, random_state=seed)
    splitter = StratifiedKFold if classification else KFold
    folds = splitter(n_splits=settings.model.cv, shuffle=True, random_state=settings.random_state)
    return CrossValidation(X, y, folds, CV_SCORING[schema.task])


def tune(settings: Settings, schema: Schema, cv: CrossValidation) -> tuple[dict[str, Any], float]:
    """Randomized search over `model.search_space`: the best parameters and their CV score."""
    family, seed = settings.model.family, settings.random_state
    space = settings.model.search_space.get(family, {})
    if not space:
        log.info("No search space for %s: the tuned candidate uses defaults.", family)
        return {}, cv.score(build_pipeline(schema, family, seed))
    sampler = list(ParameterSampler(space, n_iter=settings.model.n_iter, random_state=seed))
    best_params: dict[str, Any] = {}
    best_score = -np.inf
    for i, params in enumerate(sampler, start=1):
        score = cv.score(build_pipeline(schema, family, seed, params))
        log.info("Search %d/%d: cv %s=%.4f %s", i, len(sampler), cv.scoring, score, params)
        if score > best_score:
            best_params, best_score = params, score
    return best_params, float(best_score)


def fit_candidates(settings: Settings, split: Split, schema: Schema) -> list[Candidate]:
    """Baseline and tuned, each scored by CV, then fit on every training row and evaluated
    once on the test rows."""
    X, y = schema.model_input(split.train), split.train[schema.target]
    family, seed = settings.model.family, settings.random_state
    cv = cross_validation(settings, schema, X, y)
    baseline_score = cv.score(build_pipeline(schema, family, seed))
    tuned_params, tuned_score = tune(settings, schema, cv)
    candidates = []
    for name, params, score in [
        ("baseline", {}, baseline_score),
        ("tuned", tuned_params, tuned_score),
    ]:
        model = build_pipeline(schema, family, seed, params).fit(X, y)
        X_test, y_test = schema.model_input(split.test), split.test[schema.target]
        evaluation = evaluate(schema.task, model, X_test, y_test)
        log.info("%s: cv %s=%.4f; test %s", name, cv.scoring, score, _fmt(evaluation.metrics))
        candidates.append(Candidate(name, model, params, score, cv.scoring, len(cv.y), evaluation))
    return candidates


def select_best(candidates: list[Candidate]) -> Candidate:
    """The candidate with the best CV score; on a tie the simpler (earlier) one. Test metrics
    play no part: a choice made on them would make them an optimistic estimate."""
    return max(candidates, key=lambda c: c.cv_score)


def training_threads(rows: int, features: int) -> int | None:
    """1 for small data, else None (no limit: every core)."""
    return 1 if rows * features < ONE_THREAD_BELOW_VALUES else None


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
