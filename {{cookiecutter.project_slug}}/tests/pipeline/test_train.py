import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.pipeline import Pipeline

from conftest import make_frame
from {{ cookiecutter.package_name }}.bundle import load_bundle
from {{ cookiecutter.package_name }}.config import ConfigError, Settings
from {{ cookiecutter.package_name }}.metrics import HIGHER_IS_BETTER, PRIMARY, primary_metric
from {{ cookiecutter.package_name }}.pipeline import evaluate as evaluate_module
from {{ cookiecutter.package_name }}.pipeline import train as train_module
from {{ cookiecutter.package_name }}.pipeline.data import prepare
from {{ cookiecutter.package_name }}.pipeline.evaluate import Evaluation
from {{ cookiecutter.package_name }}.pipeline.registry import Candidate
from {{ cookiecutter.package_name }}.pipeline.train import (
    cross_validation,
    select_best,
    train,
    training_threads,
)
from {{ cookiecutter.package_name }}.processed import read_split


@pytest.fixture
def trained(settings: Settings) -> Settings:
    prepare(settings)
    train(settings)
    return settings


def runs_by_name(settings: Settings) -> dict[str, Any]:
    client = MlflowClient(settings.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(settings.mlflow.experiment)
    assert experiment is not None
    return {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}


def test_train_tracks_registers_and_exports(trained: Settings) -> None:
    runs = runs_by_name(trained)
    assert set(runs) == {"baseline", "tuned"}
    cv_metric = next(m for m in runs["baseline"].data.metrics if m.startswith("cv_"))
    cv = {name: run.data.metrics[cv_metric] for name, run in runs.items()}
    selected = [name for name, run in runs.items() if run.data.tags["selected"] == "true"]
    assert len(selected) == 1
    best = max if HIGHER_IS_BETTER[cv_metric.removeprefix("cv_")] else min  # RMSE: lower
    assert cv[selected[0]] == best(cv.values())  # a tie goes to the baseline, the simpler one
    champion = MlflowClient().get_model_version_by_alias(trained.model.registered_name, "champion")
    assert champion.run_id == runs[selected[0]].info.run_id

    bundle = load_bundle(trained.bundle_dir)
    assert bundle.version == str(champion.version)
    card = (trained.bundle_dir / "model_card.md").read_text()
    assert f"v{champion.version}" in card and "| metric | baseline | tuned | trivial |" in card
    assert f"`{selected[0]}` is the model served" in card and "cross-validation" in card
    parity = bundle.metadata["onnx_parity"]
    assert set(bundle.metadata["files"]) == {"model.skops", "model.onnx"}
    assert parity["rows"] > 0 and parity["max_abs_diff"] <= parity["tolerance"]
    assert f"Checked against the\npipeline on the {parity['rows']} test rows" in card


def fake_candidate(name: str, cv_score: float, test_score: float, task: str) -> Candidate:
    evaluation = Evaluation({primary_metric(task): test_score}, {}, rows=10)
    return Candidate(name, None, {}, cv_score, "f1_macro", 100, evaluation)  # type: ignore[arg-type]


@pytest.mark.parametrize("winner", ["baseline", "tuned"])
def test_selection_follows_cross_validation_not_the_test_rows(winner: str) -> None:
    loser = "tuned" if winner == "baseline" else "baseline"
    # The loser looks far better on the test rows: choosing on them would pick it.
    candidates = {
        winner: fake_candidate(winner, cv_score=0.9, test_score=0.5, task="classification"),
        loser: fake_candidate(loser, cv_score=0.6, test_score=0.99, task="classification"),
    }
    ordered = [candidates["baseline"], candidates["tuned"]]
    assert select_best(ordered).name == winner


def test_train_selects_by_cross_validation_even_when_the_test_rows_disagree(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tuned wins the CV, baseline wins on the test rows: tuned must be the one selected."""
    prepare(settings)
    space = settings.model.search_space[settings.model.family]
    params = {name: values[0] for name, values in space.items()}
    metric, higher_is_better = PRIMARY[settings.task]
    tuned_cv = 0.9 if higher_is_better else 0.1  # CV scores are the metric itself (RMSE > 0)
    monkeypatch.setattr(train_module.CrossValidation, "score", lambda self, pipeline: 0.5)
    monkeypatch.setattr(train_module, "tune", lambda settings, schema, cv: (params, tuned_cv))
    # fit_candidates evaluates the baseline first, then the tuned model.
    test_scores = iter([1.0, 0.0] if higher_is_better else [0.0, 1e6])
    real_evaluate = train_module.evaluate

    def rigged(task: str, model: Pipeline, X: pd.DataFrame, y: pd.Series) -> Evaluation:
        evaluation = real_evaluate(task, model, X, y)
        metrics = {**evaluation.metrics, metric: next(test_scores)}
        return Evaluation(metrics, evaluation.figures, evaluation.rows)

    monkeypatch.setattr(train_module, "evaluate", rigged)

    training = train_module.fit(settings)

    assert training.best.name == "tuned"
    assert training.best.params == params
    assert runs_by_name(settings)["tuned"].data.tags["selected"] == "true"


def bundle_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def test_a_losing_retrain_leaves_models_byte_identical_and_becomes_the_challenger(
    trained: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = bundle_files(trained.bundle_dir)
    calls: list[int] = []
    real = evaluate_module.compute_metrics

    def counting(task: str, model: Pipeline, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
        calls.append(len(X))
        return real(task, model, X, y)

    training = train_module.fit(trained)
    monkeypatch.setattr(evaluate_module, "compute_metrics", counting)
    promotion = train_module.gate(trained, training)
    train_module.export(trained, training, promotion)

    assert not promotion.promoted
    assert "does not beat the champion" in promotion.reason
    split, _ = read_split(trained.data.processed_dir)
    assert calls == [len(split.test)]  # the champion, scored once; the candidates were already
    assert bundle_files(trained.bundle_dir) == before
    assert load_bundle(trained.challenger_dir).version == promotion.version
    challenger = MlflowClient().get_model_version_by_alias(
        trained.model.registered_name, "challenger"
    )
    assert str(challenger.version) == promotion.version


def test_models_is_restored_from_the_champions_run_not_from_todays_data(
    trained: Settings,
) -> None:
    champion = load_bundle(trained.bundle_dir)
    for path in trained.bundle_dir.glob("*.*"):
        path.unlink()

    promotion = train(trained)

    assert not promotion.promoted
    restored = load_bundle(trained.bundle_dir)
    assert restored.version == champion.version
    assert restored.metadata["created_at"] == champion.metadata["created_at"]
    assert (trained.bundle_dir / "model_card.md").is_file()


def test_a_model_trained_on_changed_data_does_not_replace_the_champion_on_few_fair_rows(
    trained: Settings, tmp_path: Path
) -> None:
    """New data of 30 rows: the champion may have been trained on some of its test rows, and
    the rest are too few for a fair comparison, so the champion stays and models/ too."""
    before = (trained.bundle_dir / "metadata.json").read_bytes()
    small = tmp_path / "small.csv"
    pd.read_csv(trained.data.source).head(30).to_csv(small, index=False)
    changed = trained.model_copy(
        update={"data": trained.data.model_copy(update={"source": str(small)})}
    )
    prepare(changed)

    promotion = train(changed)

    assert not promotion.promoted
    assert "too few" in promotion.reason
    assert (trained.bundle_dir / "metadata.json").read_bytes() == before


def test_cross_validation_runs_on_a_sample_of_big_data(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    prepare(settings)
    split, schema = read_split(settings.data.processed_dir)
    small = settings.model_copy(
        update={"model": settings.model.model_copy(update={"search_rows": 100})}
    )
    cv = cross_validation(
        small, schema, schema.model_input(split.train), split.train[schema.target]
    )
    assert len(cv.X) == len(cv.y) == 100
    assert f"Cross-validating on a sample of 100 of {len(split.train)} rows" in caplog.text


def test_a_new_champion_fills_the_readme_results_between_the_markers(settings: Settings) -> None:
    readme = Path("README.md")  # the settings fixture runs in a fresh folder
    readme.write_text(
        "# My project\n\n<!-- results:start -->\nold\n<!-- results:end -->\n\nMine.\n"
    )
    prepare(settings)

    train(settings)

    text = readme.read_text()
    assert text.startswith("# My project\n") and text.endswith("\n\nMine.\n")
    section = text.split("<!-- results:start -->")[1].split("<!-- results:end -->")[0]
    assert "old" not in section
    assert "trivial model" in section and "Main features" in section
    assert "demo dataset" not in section  # the settings point at a CSV
    assert "model_card.md" in section


def test_small_data_trains_on_one_thread() -> None:
    assert training_threads(rows=455, features=30) == 1
    assert training_threads(rows=1_000_000, features=10) is None


def test_runtime_sklearn_exports_no_onnx(settings: Settings) -> None:
    serving = settings.serving.model_copy(update={"runtime": "sklearn"})
    sklearn_settings = settings.model_copy(update={"serving": serving})
    prepare(sklearn_settings)

    train(sklearn_settings)

    bundle = load_bundle(sklearn_settings.bundle_dir)
    assert set(bundle.metadata["files"]) == {"model.skops"}
    assert bundle.metadata["onnx_parity"] is None
    assert "serving.runtime: sklearn" in (bundle.directory / "model_card.md").read_text()


def test_a_model_on_a_changed_feature_schema_is_a_challenger_until_promoted(
    trained: Settings, tmp_path: Path
) -> None:
    """A column added, one removed and one retyped: the champion cannot be compared with the
    new model on the same features, so it stays until someone checks and runs `make promote`."""
    before = (trained.bundle_dir / "metadata.json").read_bytes()
    data = pd.read_csv(trained.data.source).drop(columns="score")
    data["visits"] = "v" + data["visits"].astype(str)
    data["region"] = ["north", "south", "east"] * (len(data) // 3)
    changed_csv = tmp_path / "changed.csv"
    data.to_csv(changed_csv, index=False)
    changed = trained.model_copy(
        update={"data": trained.data.model_copy(update={"source": str(changed_csv)})}
    )
    prepare(changed)

    promotion = train(changed)

    assert not promotion.promoted
    assert "feature schema changed" in promotion.reason
    assert "added: region" in promotion.reason and "removed: score" in promotion.reason
    assert "visits (numeric integer -> categorical string)" in promotion.reason
    assert "make promote" in promotion.reason
    assert (trained.bundle_dir / "metadata.json").read_bytes() == before
    assert load_bundle(trained.challenger_dir).version == promotion.version


def on_data(settings: Settings, frame: pd.DataFrame, task: str) -> Settings:
    """The settings fixture on `frame` for `task`, with the family every task can search."""
    frame.to_csv("other.csv", index=False)
    return settings.model_copy(
        update={
            "task": task,
            "data": settings.data.model_copy(update={"source": "other.csv"}),
            "model": settings.model.model_copy(update={"family": "hist_gradient_boosting"}),
        }
    )


def test_regression_shows_rmse_not_the_negated_score_sklearn_maximises(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    regression = on_data(settings, make_frame(task="regression"), "regression")
    prepare(regression)

    train(regression)

    assert "neg_" not in caplog.text
    shown = [float(value) for value in re.findall(r"cv rmse=(-?[\d.]+)", caplog.text)]
    assert len(shown) >= 3 and min(shown) > 0
    runs = runs_by_name(regression)
    assert all(run.data.metrics["cv_rmse"] > 0 for run in runs.values())
    card = (regression.bundle_dir / "model_card.md").read_text()
    assert "(mean `rmse`, lower is better)" in card


def test_training_output_has_no_mlflow_noise(
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    recwarn: pytest.WarningsRecorder,
) -> None:
    """Integer class labels (MLflow's integer-column hint), no pip in the environment (its
    version warning), a second run reading the champion's files (download progress bars)."""
    numbered = make_frame(task="classification")
    numbered["target"] = (numbered["target"] == "yes").astype(int)
    labels = on_data(settings, numbered, "classification")
    prepare(labels)

    train(labels)
    train(labels)

    assert not [w for w in recwarn if "Inferred schema contains integer" in str(w.message)]
    assert "Failed to resolve installed pip version" not in caplog.text
    assert "Downloading artifacts" not in capsys.readouterr().err


@pytest.mark.parametrize("problem", ["name", "value"])
def test_a_search_space_the_model_refuses_is_one_line_naming_the_setting(
    settings: Settings, problem: str
) -> None:
    family = settings.model.family
    refused = {  # a value each family's estimator refuses
        "hist_gradient_boosting": {"max_leaf_nodes": [-5]},
        "random_forest": {"n_estimators": [-1]},
        "linear": {"C" if settings.task == "classification" else "alpha": [-1.0]},
    }
    space = {family: {"no_such_param": [1]} if problem == "name" else refused[family]}
    model = settings.model.model_copy(update={"search_space": space, "n_iter": 1})
    broken = settings.model_copy(update={"model": model})
    prepare(broken)

    with pytest.raises(ConfigError) as raised:
        train_module.fit(broken)

    message = str(raised.value)
    assert message.startswith(f"model.search_space.{family}: cannot try")
    assert ("no_such_param" if problem == "name" else "-") in message
    assert "\n" not in message and "Traceback" not in message
