"""MLflow: one run per candidate, the registry's `@champion` alias, and the bundle export."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.pipeline import Pipeline
from skops import io as sio

from ..bundle import save_bundle
from ..config import Settings
from ..schema import Schema
from .evaluate import Evaluation, evaluate, is_better, primary_metric
from .onnx_export import Parity, export_onnx
from .processed import Split

log = logging.getLogger(__name__)
CHAMPION = "champion"


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
    """The outcome of registering this run's best model: which version serves, and its scores."""

    version: str  # the version registered by this run
    promoted: bool
    champion_version: str
    champion_model: Pipeline
    champion_evaluation: Evaluation
    champion_run_id: str


def start_tracking(settings: Settings) -> None:
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    mlflow.set_experiment(settings.mlflow.experiment)


def log_run(
    settings: Settings, candidate: Candidate, split: Split, schema: Schema, *, selected: bool
) -> None:
    """One MLflow run per candidate: params, CV and test metrics, schema, plots, the model."""
    # Prepared as the model reads rows; numbers typed float64 so MLflow's signature accepts
    # the JSON numbers `mlflow models serve` is sent (float32 would refuse them).
    example = schema.model_input(split.train.head(5)).astype(dict.fromkeys(schema.numeric, float))
    with mlflow.start_run(run_name=candidate.name) as run:
        mlflow.set_tags({"selected": str(selected).lower(), "selected_by": "cross-validation"})
        mlflow.log_params(
            {
                "family": settings.model.family,
                "cv_folds": settings.model.cv,
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
        mlflow.log_dict(schema.to_dict(), "schema.json")
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
    """Register `best`; it becomes `@champion` only if it beats the champion on the test rows."""
    client = MlflowClient()
    name = settings.model.registered_name
    version = str(mlflow.register_model(best.model_uri, name).version)
    metric = primary_metric(schema.task)
    new_score = best.evaluation.metrics[metric]
    current = _current_champion(client, name, split, schema)
    if current is not None:
        model_version, model, evaluation = current
        old_score = evaluation.metrics[metric]
        if not is_better(schema.task, new_score, old_score):
            log.info(
                "Candidate v%s (test %s=%.4f) does not beat champion v%s (%.4f): champion kept.",
                version,
                metric,
                new_score,
                model_version.version,
                old_score,
            )
            return Promotion(
                version,
                False,
                str(model_version.version),
                model,
                evaluation,
                str(model_version.run_id),
            )
    client.set_registered_model_alias(name, CHAMPION, version)
    log.info("Model %s v%s is now @%s (test %s=%.4f).", name, version, CHAMPION, metric, new_score)
    return Promotion(version, True, version, best.model, best.evaluation, best.run_id)


def _current_champion(
    client: MlflowClient, name: str, split: Split, schema: Schema
) -> tuple[Any, Pipeline, Evaluation] | None:
    """The current champion, evaluated on this run's test rows (so both compare on the same
    rows), or None when there is none or it cannot score today's data."""
    try:
        model_version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    try:
        model = mlflow.sklearn.load_model(f"models:/{name}@{CHAMPION}")
        evaluation = evaluate(
            schema.task, model, schema.model_input(split.test), split.test[schema.target]
        )
    except (KeyError, ValueError) as exc:
        log.warning(
            "Champion v%s cannot score the current data (%s): replacing it.",
            model_version.version,
            exc,
        )
        return None
    return model_version, model, evaluation


def export_bundle(
    settings: Settings, promotion: Promotion, split: Split, schema: Schema
) -> tuple[Path, Parity | None]:
    """Write the champion (this run's best, or the one it did not beat) to models/, with a
    sample request and its plots; with serving.runtime onnx, also as ONNX checked against it on
    the test rows (its parity figures are returned and go into metadata.json)."""
    name, directory = settings.model.registered_name, settings.bundle_dir
    evaluation = promotion.champion_evaluation
    onnx_model, parity = None, None
    if settings.serving.runtime == "onnx":
        onnx_model, parity = export_onnx(promotion.champion_model, schema, split.test)
    save_bundle(
        promotion.champion_model,
        directory,
        name=name,
        version=promotion.champion_version,
        run_id=promotion.champion_run_id,
        metrics=evaluation.metrics,
        schema=schema,
        onnx_model=onnx_model,
        extra={
            "model_family": settings.model.family,
            "onnx_parity": None if parity is None else parity.to_dict(),
        },
    )
    sample = json.loads(split.test[schema.names].head(5).to_json(orient="records"))
    (directory / "sample_request.json").write_text(json.dumps({"instances": sample}, indent=2))
    for file_name, figure in evaluation.figures.items():
        figure.savefig(directory / file_name, dpi=100, bbox_inches="tight")
    log.info("Exported %s v%s to %s/", name, promotion.champion_version, directory)
    return directory, parity


def mlflow_ui(settings: Settings, port: int) -> None:
    """Run the MLflow UI on the configured tracking store until interrupted."""
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri"]
    command += [settings.mlflow.tracking_uri, "--port", str(port)]
    log.info("MLflow UI on http://127.0.0.1:%d (Ctrl+C to stop)", port)
    subprocess.run(command, check=False)


def _pip_requirements() -> list[str]:
    """Pinned from this environment, so MLflow does not spend seconds inferring them."""
    return [f"{p}=={installed_version(p)}" for p in ("scikit-learn", "skops", "pandas", "numpy")]
