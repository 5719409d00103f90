"""Shared fixtures: tiny synthetic data, settings pointed at tmp_path, a trained bundle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from threadpoolctl import threadpool_limits

from {{ cookiecutter.package_name }}.bundle import save_bundle
from {{ cookiecutter.package_name }}.config import Settings, get_settings
from {{ cookiecutter.package_name }}.pipeline.features import build_pipeline
from {{ cookiecutter.package_name }}.pipeline.onnx_export import export_onnx
from {{ cookiecutter.package_name }}.schema import Schema

TASK = "{{ cookiecutter.task }}"
FAMILY = "{{ cookiecutter.model_family }}"


def make_frame(rows: int = 240, seed: int = 0, task: str = TASK) -> pd.DataFrame:
    """Messy, realistic columns: floats with NaN, an integer code, a string category with NaN."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "age": rng.normal(50, 10, rows).round(1),
            "visits": rng.integers(0, 6, rows),
            "plan": rng.choice(["basic", "plus", "pro"], rows),
            "score": rng.normal(0, 1, rows),
        }
    )
    signal = df["score"] + (df["plan"] == "pro") * 1.5 + df["visits"] * 0.2
    if task == "classification":
        df["target"] = np.where(signal > signal.median(), "yes", "no")
    else:
        df["target"] = (signal * 10 + rng.normal(0, 1, rows)).round(3)
    df.loc[::11, "age"] = np.nan
    df.loc[::13, "plan"] = None
    return df


def make_churn_csv(path: Path, rows: int = 300, seed: int = 0) -> Path:
    """A churn export as learners bring it: an ID, a date, amounts with blanks, free text,
    string categories and a Yes/No target."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 72, rows)
    monthly = rng.uniform(20, 110, rows).round(2)
    plan = rng.choice(["Month-to-month", "One year", "Two year"], rows)
    churn = (plan == "Month-to-month") & (rng.uniform(size=rows) < 0.6) | (tenure < 6)
    total = (tenure * monthly).round(2).astype(str)
    total[::37] = " "  # blank amounts, as in a spreadsheet export
    words = np.array(["slow", "support", "price", "happy", "moving", "wifi", "bill", "late"])
    ids = range(rows)
    df = pd.DataFrame(
        {
            "customerID": [f"{i:04d}-{chr(65 + i % 26)}{chr(65 + i // 26 % 26)}" for i in ids],
            "signup_date": pd.date_range("2020-01-01", periods=rows, freq="3D").strftime("%F"),
            "plan": plan,
            "tenure": tenure,
            "MonthlyCharges": monthly,
            "TotalCharges": total,
            "notes": [" ".join(rng.choice(words, 4)) + f" #{i}" for i in range(rows)],
            "Churn": np.where(churn, "Yes", "No"),
        }
    )
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def churn_settings(settings: Settings, tmp_path: Path) -> Settings:
    """The settings fixture pointed at the churn CSV, a classification task."""
    csv = make_churn_csv(tmp_path / "churn.csv")
    data = settings.data.model_copy(update={"source": str(csv), "target": "Churn"})
    return settings.model_copy(update={"task": "classification", "data": data})


@pytest.fixture(scope="session", autouse=True)
def _one_thread_per_test_process() -> Iterator[None]:
    """Tiny data gains nothing from OpenMP threads, which crawl when the CPUs are busy."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture
def frame() -> pd.DataFrame:
    """Synthetic data for this project's task."""
    return make_frame()


@pytest.fixture
def clf_frame() -> pd.DataFrame:
    """Synthetic data with a string class target, whatever this project's task."""
    return make_frame(task="classification")


@pytest.fixture
def frames() -> dict[str, pd.DataFrame]:
    """Synthetic data for each task."""
    return {task: make_frame(task=task) for task in ("classification", "regression")}


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings whose every path and URL lives in tmp_path, also written to ./config.yaml."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    csv = tmp_path / "raw.csv"
    make_frame().to_csv(csv, index=False)
    value = Settings.model_validate(
        {
            "task": TASK,
            "data": {"source": str(csv), "target": "target", "processed_dir": tmp_path / "data"},
            "model": {
                "family": FAMILY,
                "registered_name": "test-model",
                "models_dir": tmp_path / "models",
                "n_iter": 2,
                "cv": 2,
                "search_space": {
                    "hist_gradient_boosting": {"max_leaf_nodes": [7, 15]},
                    "random_forest": {"n_estimators": [20, 40], "max_depth": [4, 8]},
                    "linear": {"C" if TASK == "classification" else "alpha": [0.1, 1.0]},
                },
            },
            "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "t"},
            "serving": {
                "prediction_log_url": f"sqlite:///{tmp_path / 'predictions.db'}",
                "max_batch_size": 50,
            },
            "monitoring": {"reports_dir": tmp_path / "reports", "min_rows": 20, "window": 200},
        }
    )
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(value.model_dump(mode="json")))
    get_settings.cache_clear()
    yield value
    get_settings.cache_clear()


@pytest.fixture
def schema(frame: pd.DataFrame) -> Schema:
    return Schema.infer(frame, "target", TASK)


@pytest.fixture
def bundle_dir(settings: Settings, frame: pd.DataFrame, schema: Schema) -> Path:
    """A real bundle (scikit-learn pipeline and its ONNX export) of a pipeline fitted on the
    synthetic frame, where settings expect it."""
    return save_test_bundle(settings.bundle_dir, frame, schema, version="1")


@pytest.fixture
def challenger_dir(
    settings: Settings, bundle_dir: Path, frame: pd.DataFrame, schema: Schema
) -> Path:
    """A second bundle, version 2, in models/challenger/: fitted on the targets in reverse
    order, so it disagrees with the champion on many rows."""
    shuffled = frame.assign(target=frame["target"].to_numpy()[::-1])
    return save_test_bundle(settings.challenger_dir, shuffled, schema, version="2")


def save_test_bundle(directory: Path, frame: pd.DataFrame, schema: Schema, version: str) -> Path:
    model = build_pipeline(schema, FAMILY, random_state=0)
    model.fit(schema.model_input(frame), frame["target"])
    onnx_model, _ = export_onnx(model, schema, make_frame(seed=1))
    save_bundle(
        model,
        directory,
        name="test-model",
        version=version,
        run_id=f"run-{version}",
        metrics={"holdout": 1.0},
        schema=schema,
        onnx_model=onnx_model,
    )
    return directory
