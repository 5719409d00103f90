import pandas as pd
import pytest

from {{ cookiecutter.package_name }}.pipeline.evaluate import compute_metrics, plot
from {{ cookiecutter.package_name }}.pipeline.features import build_pipeline
from {{ cookiecutter.package_name }}.schema import Schema


@pytest.mark.parametrize("classes", [["no", "yes"], ["a", "b", "c"]])
def test_classification_metrics_and_plots(clf_frame: pd.DataFrame, classes: list[str]) -> None:
    clf_frame["target"] = [classes[i % len(classes)] for i in range(len(clf_frame))]
    schema = Schema.infer(clf_frame, "target", "classification")
    X, y = schema.model_input(clf_frame), clf_frame["target"]
    model = build_pipeline(schema, "linear", random_state=0).fit(X, y)
    metrics = compute_metrics("classification", model, X, y)
    assert {"accuracy", "f1_macro"} <= metrics.keys()
    assert ("roc_auc" if len(classes) == 2 else "roc_auc_ovr") in metrics
    figures = plot("classification", model, X, y)
    assert "confusion_matrix.png" in figures
    assert ("roc_curve.png" in figures) == (len(classes) == 2)


def test_regression_metrics_and_plots(frames: dict[str, pd.DataFrame]) -> None:
    frame = frames["regression"]
    schema = Schema.infer(frame, "target", "regression")
    X, y = schema.model_input(frame), frame["target"]
    model = build_pipeline(schema, "linear", random_state=0).fit(X, y)
    metrics = compute_metrics("regression", model, X, y)
    assert metrics["rmse"] > 0 and metrics["r2"] > 0.5
    assert list(plot("regression", model, X, y)) == ["residuals.png"]
