"""`make promote` and `make rollback` on the real MLflow sqlite registry and models/."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from {{ cookiecutter.package_name }}.bundle import load_bundle
from {{ cookiecutter.package_name }}.cli import app
from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.pipeline.data import prepare
from {{ cookiecutter.package_name }}.pipeline.evaluate import evaluate
from {{ cookiecutter.package_name }}.pipeline.features import build_pipeline
from {{ cookiecutter.package_name }}.pipeline.lifecycle import LifecycleError, promote, rollback
from {{ cookiecutter.package_name }}.pipeline.registry import Candidate, Training, log_run
from {{ cookiecutter.package_name }}.pipeline.train import export, gate, train
from {{ cookiecutter.package_name }}.processed import read_split


def aliases(settings: Settings) -> dict[str, str]:
    model = MlflowClient().get_registered_model(settings.model.registered_name)
    return {alias: str(version) for alias, version in model.aliases.items()}


@pytest.fixture
def challenged(settings: Settings) -> Settings:
    """v1 trained as the champion; v2, a model that does not beat it, the challenger: what a
    second `make train` makes, without fitting the same models twice."""
    prepare(settings)
    train(settings)
    split, schema = read_split(settings.data.processed_dir)
    weak = {"C": 1e-6} if schema.task == "classification" else {"alpha": 1e6}
    model = build_pipeline(schema, "linear", 0, weak)  # all but ignores the features
    model.fit(schema.model_input(split.train), split.train[schema.target])
    X, y = schema.model_input(split.test), split.test[schema.target]
    evaluation = evaluate(schema.task, model, X, y)
    worse = Candidate("dummy", model, {}, 0.0, "f1_macro", len(split.train), evaluation)
    log_run(settings, worse, split, schema, selected=True)
    training = Training(split, schema, [worse], worse, trivial={})
    export(settings, training, gate(settings, training))
    return settings


def test_train_promote_rollback_moves_the_aliases_and_models(
    challenged: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = challenged
    assert aliases(settings) == {"champion": "1", "challenger": "2"}
    assert load_bundle(settings.challenger_dir).version == "2"

    assert promote(settings) == "2"

    assert aliases(settings) == {"champion": "2", "previous-champion": "1"}
    assert load_bundle(settings.bundle_dir).version == "2"
    assert (settings.bundle_dir / "model.onnx").is_file() == (settings.serving.runtime == "onnx")
    assert not settings.challenger_dir.exists()  # the challenge is over
    with pytest.raises(LifecycleError, match="has no @challenger to promote"):
        promote(settings)

    assert rollback(settings) == "1"

    assert aliases(settings) == {"champion": "1"}
    assert load_bundle(settings.bundle_dir).version == "1"
    client = MlflowClient()
    assert client.get_model_version(settings.model.registered_name, "2").tags["rolled_back"]
    history = client.get_registered_model(settings.model.registered_name).tags
    assert json.loads(history["champion_history"]) == ["1"]
    result = CliRunner().invoke(app, ["rollback"])  # as `make rollback` runs it
    assert result.exit_code == 1
    assert "no previous champion to roll back to (champions so far: 1)" in caplog.text
    assert load_bundle(settings.bundle_dir).version == "1"


def test_promote_before_any_training_says_to_train(settings: Settings) -> None:
    with pytest.raises(LifecycleError, match="run `make train`"):
        promote(settings)
