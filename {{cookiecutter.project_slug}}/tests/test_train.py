import json
import logging

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.pipeline import Pipeline

from {{ cookiecutter.package_name }}.bundle import load_bundle
from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.data import prepare, read_split
from {{ cookiecutter.package_name }}.evaluate import compute_metrics
from {{ cookiecutter.package_name }}.features import build_preprocessor
from {{ cookiecutter.package_name }}.train import Candidate, log_run, promote, train, tune


@pytest.fixture
def trained(settings: Settings) -> Settings:
    prepare(settings)
    train(settings)
    return settings


def test_train_tracks_registers_and_exports(trained: Settings) -> None:
    client = MlflowClient(trained.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(trained.mlflow.experiment)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert {r.info.run_name for r in runs} == {"baseline", "tuned"}
    assert all(r.data.metrics and "family" in r.data.params for r in runs)
    champion = client.get_model_version_by_alias(trained.model.registered_name, "champion")

    bundle = load_bundle(trained.bundle_dir)
    assert bundle.version == str(champion.version)
    assert bundle.metadata["run_id"] == champion.run_id
    sample = json.loads((trained.bundle_dir / "sample_request.json").read_text())["instances"]
    assert len(bundle.model.predict(bundle.schema.frame(sample))) == len(sample) == 5
    card = (trained.bundle_dir / "model_card.md").read_text()
    assert f"v{champion.version}" in card and "| metric | champion | baseline | tuned |" in card


def test_a_worse_model_does_not_take_the_champion_alias(trained: Settings) -> None:
    split, schema = read_split(trained)
    dummy = DummyClassifier() if schema.task == "classification" else DummyRegressor()
    model = Pipeline([("preprocess", build_preprocessor(schema, "linear")), ("model", dummy)])
    model.fit(split.train[schema.names], split.train[schema.target])
    metrics = compute_metrics(
        schema.task, model, split.test[schema.names], split.test[schema.target]
    )
    worse = Candidate("dummy", model, {}, metrics)
    log_run(trained, worse, split, schema)

    version, promoted = promote(trained, worse, split, schema)

    champion = MlflowClient().get_model_version_by_alias(trained.model.registered_name, "champion")
    assert not promoted
    assert str(champion.version) != version
    assert mlflow.get_run(worse.run_id).info.run_name == "dummy"


def test_retraining_on_the_same_data_keeps_the_champion(trained: Settings) -> None:
    before = load_bundle(trained.bundle_dir).version
    result = train(trained)
    assert not result.promoted
    assert load_bundle(trained.bundle_dir).version == before


def test_search_ranks_candidates_on_a_sample_of_big_data(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    prepare(settings)
    split, schema = read_split(settings)
    small = settings.model_copy(
        update={"model": settings.model.model_copy(update={"search_rows": 100})}
    )
    params = tune(small, schema, split.train[schema.names], split.train[schema.target])
    assert f"Searching on a sample of 100 of {len(split.train)} rows" in caplog.text
    space = settings.model.search_space.get(settings.model.family, {})
    assert params.keys() == space.keys()
