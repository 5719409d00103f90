"""Live quality on rows scored by the real app and labelled through its /feedback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sklearn import metrics as skm

from conftest import TASK, Traffic
from {{ cookiecutter.package_name }}.bundle import METADATA_FILE
from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.monitoring.quality import check_quality

PRIMARY = "f1_macro" if TASK == "classification" else "rmse"


def set_holdout(bundle_dir: Path, metrics: dict[str, float]) -> None:
    """The holdout metrics the served bundle was exported with."""
    path = bundle_dir / METADATA_FILE
    metadata = json.loads(path.read_text())
    path.write_text(json.dumps({**metadata, "metrics": metrics}))


def test_live_metrics_are_sklearns_on_the_labelled_rows(
    settings: Settings, labelled_traffic: Traffic
) -> None:
    labelled = labelled_traffic(rows=60, labelled=40)

    summary = check_quality(settings)

    assert summary.status == "ok"
    assert summary.labelled_rows == 40
    live = summary.versions["1"].live
    y, p = labelled["actual"], labelled["prediction"]
    if TASK == "classification":
        assert live["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
        assert live["f1_macro"] == pytest.approx(skm.f1_score(y, p, average="macro"))
    else:
        assert live["rmse"] == pytest.approx(skm.root_mean_squared_error(y, p))
        assert live["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    saved = json.loads((settings.monitoring.reports_dir / "quality_summary.json").read_text())
    assert saved["versions"]["1"]["live"] == pytest.approx(live)
    assert saved["versions"]["1"]["holdout"] == {"holdout": 1.0}
    assert Path(saved["report_path"]).read_text().lstrip().lower().startswith("<!doctype html")


@pytest.mark.parametrize("wrong", [False, True], ids=["right-labels", "wrong-labels"])
def test_degraded_when_live_is_worse_than_holdout_by_more_than_allowed(
    settings: Settings, bundle_dir: Path, labelled_traffic: Traffic, wrong: bool
) -> None:
    set_holdout(bundle_dir, {PRIMARY: 0.9 if TASK == "classification" else 5.0})
    labelled_traffic(rows=40, labelled=40, wrong=wrong)

    version = check_quality(settings).versions["1"]

    assert version.degraded is wrong
    assert version.drop is not None
    assert (version.drop > settings.monitoring.max_metric_drop) is wrong


def test_too_few_labels_says_so_and_leaves_no_old_numbers(
    settings: Settings, labelled_traffic: Traffic
) -> None:
    labelled_traffic(rows=40, labelled=25)
    settings.monitoring.min_labelled_rows = 20
    assert check_quality(settings).status == "ok"
    settings.monitoring.min_labelled_rows = 30

    summary = check_quality(settings)

    assert summary.status == "not_enough_labels"
    assert "25 logged predictions have a true value, at least 30" in summary.message
    assert summary.versions["1"].live == {}
    assert not (settings.monitoring.reports_dir / "quality_report.html").exists()
    saved = json.loads((settings.monitoring.reports_dir / "quality_summary.json").read_text())
    assert saved["status"] == "not_enough_labels"
    assert saved["report_path"] is None


def test_no_prediction_log_yet_is_not_enough_labels(settings: Settings) -> None:
    summary = check_quality(settings)

    assert summary.status == "not_enough_labels"
    assert not Path(settings.prediction_log.url.removeprefix("sqlite:///")).exists()
