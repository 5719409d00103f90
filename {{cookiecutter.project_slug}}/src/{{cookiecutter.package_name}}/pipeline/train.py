"""Train stage: a baseline and a tuned candidate, chosen between by cross-validation.

Only the training rows decide which candidate is best (k-fold CV, the same folds for both). The
test rows are used once per model, to report its metrics and to compare it with the champion.
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
from .model_card import write_model_card
from .registry import Candidate, Promotion, log_run, promote, safe_source, start_tracking
from .results import main_features, results_section, write_results

log = logging.getLogger(__name__)
# What cross-validation maximises: the primary metric of each task, signed so higher is better.
CV_SCORING = {"classification": "f1_macro", "regression": "neg_root_mean_squared_error"}
# HistGradientBoosting's OpenMP threads spin while they wait for work: on small data, or on a
# machine other processes keep busy, extra threads make training many times slower (one fit:
# 18.8 s with every thread vs 1.0 s with one, on a busy 2-core machine). Below this many values
# (rows x features) training uses one thread.
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


@dataclass(frozen=True)
class TrainResult:
    best: Candidate
    candidates: list[Candidate]
    promotion: Promotion


def cross_validation(
    settings: Settings, schema: Schema, X: pd.DataFrame, y: pd.Series
) -> CrossValidation:
    """Folds over the training rows; past `model.search_rows`, over a sample of them (ranking
    candidates needs far fewer rows than fitting the final model)."""
    classification = schema.task == "classification"
    if len(X) > settings.model.search_rows:
        log.info(
            "Cross-validating on a sample of %d of %d rows.", settings.model.search_rows, len(X)
        )
        X, _, y, _ = train_test_split(
            X,
            y,
            train_size=settings.model.search_rows,
            stratify=y if classification else None,
            random_state=settings.random_state,
        )
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
    """Baseline (the family's defaults) and tuned, each scored by CV, then fit on every
    training row and evaluated once on the test rows."""
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
        evaluation = evaluate(
            schema.task, model, schema.model_input(split.test), split.test[schema.target]
        )
        log.info("%s: cv %s=%.4f; test %s", name, cv.scoring, score, _fmt(evaluation.metrics))
        candidates.append(Candidate(name, model, params, score, cv.scoring, len(cv.y), evaluation))
    return candidates


def select_best(candidates: list[Candidate]) -> Candidate:
    """The candidate with the best CV score; on a tie the simpler (earlier) one. Test metrics
    play no part: a choice made on them would make them an optimistic estimate."""
    return max(candidates, key=lambda c: c.cv_score)


def train(settings: Settings) -> TrainResult:
    """The `train` stage."""
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
            "%s is not clearly better than a model that ignores the features (test %s): "
            "more rows or better features may help. See the model card.",
            best.name,
            _fmt(trivial),
        )
    for candidate in candidates:
        log_run(settings, candidate, split, schema, selected=candidate is best)
    promotion = promote(settings, best, split, schema)
    if promotion.promoted:
        publish(
            settings,
            promotion,
            split=split,
            schema=schema,
            candidates=candidates,
            best=best,
            trivial=trivial,
        )
        remove_challenger(settings)
    else:
        restore_bundle(settings, promotion)
        challenge(settings, promotion, best, split, schema)
    return TrainResult(best=best, candidates=candidates, promotion=promotion)


def publish(
    settings: Settings,
    promotion: Promotion,
    *,
    split: Split,
    schema: Schema,
    candidates: list[Candidate],
    best: Candidate,
    trivial: dict[str, float],
) -> None:
    """A new champion: models/, its model card, the README's Results, a copy with its run."""
    directory, parity = export_bundle(settings, best, promotion, split, schema)
    write_model_card(
        directory / "model_card.md",
        name=settings.model.registered_name,
        schema=schema,
        split=split,
        promotion=promotion,
        candidates=candidates,
        selected=best,
        trivial=trivial,
        cv_folds=settings.model.cv,
        parity=parity,
    )
    store_with_run(directory, best.run_id)
    seed = settings.random_state
    section = results_section(
        source=safe_source(settings.data.source),
        family=settings.model.family,
        version=promotion.version,
        schema=schema,
        split=split,
        metrics=best.evaluation.metrics,
        trivial=trivial,
        features=main_features(best.model, split, schema, CV_SCORING[schema.task], seed),
        plots=sorted(best.evaluation.figures),
        models_dir=directory,
    )
    if write_results(Path("README.md"), section):
        log.info("README.md: the Results section now shows v%s.", promotion.version)


def challenge(
    settings: Settings, promotion: Promotion, best: Candidate, split: Split, schema: Schema
) -> None:
    """The model that did not win: models/challenger/, for the service to try on live traffic
    (serving.rollout) and `make promote` to crown if it does better there."""
    directory, _ = export_bundle(
        settings, best, promotion, split, schema, directory=settings.challenger_dir
    )
    store_with_run(directory, best.run_id)
    log.info(
        "Challenger v%s is in %s/: try it with serving.rollout shadow or canary.",
        promotion.version,
        directory,
    )


def training_threads(rows: int, features: int) -> int | None:
    """1 for small data, else None (no limit: every core)."""
    return 1 if rows * features < ONE_THREAD_BELOW_VALUES else None


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
