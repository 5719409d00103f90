import mlflow
import pytest
from mlflow.tracking import MlflowClient
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.pipeline import Pipeline

from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.pipeline.data import prepare
from {{ cookiecutter.package_name }}.pipeline.evaluate import evaluate
from {{ cookiecutter.package_name }}.pipeline.features import build_preprocessor
from {{ cookiecutter.package_name }}.pipeline.registry import (
    Candidate,
    TrackingError,
    log_run,
    register,
    start_tracking,
)
from {{ cookiecutter.package_name }}.pipeline.train import train
from {{ cookiecutter.package_name }}.processed import read_split


def test_a_worse_model_does_not_take_the_champion_alias(settings: Settings) -> None:
    prepare(settings)
    train(settings)
    split, schema = read_split(settings.data.processed_dir)
    dummy = DummyClassifier() if schema.task == "classification" else DummyRegressor()
    model = Pipeline([("preprocess", build_preprocessor(schema, "linear")), ("model", dummy)])
    model.fit(schema.model_input(split.train), split.train[schema.target])
    evaluation = evaluate(
        schema.task, model, schema.model_input(split.test), split.test[schema.target]
    )
    worse = Candidate("dummy", model, {}, 0.0, "f1_macro", len(split.train), evaluation)
    log_run(settings, worse, split, schema, selected=True)

    promotion = register(settings, worse, split, schema)

    champion = MlflowClient().get_model_version_by_alias(settings.model.registered_name, "champion")
    assert not promotion.promoted
    assert str(champion.version) == promotion.champion_version != promotion.version
    assert "does not beat the champion" in promotion.reason
    run = mlflow.get_run(worse.run_id)
    assert run.info.run_name == "dummy"
    assert run.data.tags["selected_by"] == "cross-validation"
    assert {"cv_f1_macro", f"test_{next(iter(evaluation.metrics))}"} <= set(run.data.metrics)
    assert run.data.params["data_source"] == settings.data.source
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"training rows", "test rows"}


def test_a_tracking_store_that_cannot_be_opened_is_one_line_without_its_password(
    settings: Settings,
) -> None:
    uri = "postgresql+nodriver://ml:s3cret@127.0.0.1:9/tracking"
    broken = settings.model_copy(
        update={"mlflow": settings.mlflow.model_copy(update={"tracking_uri": uri})}
    )

    with pytest.raises(TrackingError) as raised:
        start_tracking(broken)
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)  # global: not left on the broken one

    message = str(raised.value)
    assert "postgresql+nodriver://ml:***@127.0.0.1:9/tracking (mlflow.tracking_uri)" in message
    assert "s3cret" not in message
    assert "\n" not in message
