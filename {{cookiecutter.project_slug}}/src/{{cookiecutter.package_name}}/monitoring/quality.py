"""Live model quality: logged predictions joined with their true values (POST /feedback).

Per model version, the live metrics sit next to the holdout metrics that version was exported
with; a version is degraded when its primary metric is worse than on the holdout set by more
than `monitoring.max_metric_drop` (a share: 0.1 = 10% worse). Labels arrive late and partly, so
too few of them is a normal state, written down as such, never as numbers of an older run.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.datasets import BinaryClassification, MulticlassClassification, Regression
from evidently.presets import ClassificationPreset, RegressionPreset
from sklearn.exceptions import UndefinedMetricWarning

from ..bundle import METADATA_FILE, BundleError, load_bundle
from ..config import MonitoringSettings, Settings
from ..metrics import drop, live_scores, primary_metric
from ..prediction_log.reader import Reader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionQuality:
    labelled_rows: int
    live: dict[str, float]  # empty when the version has too few labelled rows
    holdout: dict[str, float]  # empty when no bundle of the version is at hand
    drop: float | None  # how much worse the live primary metric is, as a share of the holdout
    degraded: bool


@dataclass(frozen=True)
class QualitySummary:
    status: Literal["ok", "not_enough_labels"]
    message: str
    task: str
    primary_metric: str
    labelled_rows: int
    min_labelled_rows: int
    max_metric_drop: float
    versions: dict[str, VersionQuality]
    generated_at: str
    report_path: Path | None

    @property
    def degraded(self) -> bool:
        return any(v.degraded for v in self.versions.values())


def check_quality(settings: Settings) -> QualitySummary:
    """Write reports/quality_summary.json, and quality_report.html when there are enough labels."""
    cfg, task = settings.monitoring, settings.task
    report = cfg.reports_dir / "quality_report.html"
    report.unlink(missing_ok=True)  # an older report must not pass for this run's
    labelled = Reader(settings.prediction_log.url).labelled(cfg.window)
    holdout = holdout_metrics(settings.bundle_dir)
    versions = {
        str(version): version_quality(task, rows, holdout.get(str(version), {}), cfg)
        for version, rows in labelled.groupby("model_version", sort=True)
    }
    scored = [version for version, quality in versions.items() if quality.live]
    cfg.reports_dir.mkdir(parents=True, exist_ok=True)
    if scored:
        rows = labelled[labelled["model_version"].isin(scored)]
        quality_report(task, rows).save_html(str(report))
        message = "; ".join(_describe(version, versions[version]) for version in scored)
    else:
        message = (
            f"Not enough labels for live quality: {len(labelled)} logged predictions have a true "
            f"value, at least {cfg.min_labelled_rows} per model version are needed "
            "(monitoring.min_labelled_rows). Send true values to POST /feedback "
            "(`make simulate` does)."
        )
    summary = QualitySummary(
        status="ok" if scored else "not_enough_labels",
        message=message,
        task=task,
        primary_metric=primary_metric(task),
        labelled_rows=len(labelled),
        min_labelled_rows=cfg.min_labelled_rows,
        max_metric_drop=cfg.max_metric_drop,
        versions=versions,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        report_path=report if scored else None,
    )
    saved = {**asdict(summary), "degraded": summary.degraded}
    (cfg.reports_dir / "quality_summary.json").write_text(json.dumps(saved, indent=2, default=str))
    log.info("Live quality: %s%s", message, f" Report: {report}" if scored else "")
    return summary


def version_quality(
    task: str, rows: pd.DataFrame, holdout: dict[str, float], cfg: MonitoringSettings
) -> VersionQuality:
    """Live metrics of one model version, and whether its primary metric dropped too far."""
    if len(rows) < cfg.min_labelled_rows:
        return VersionQuality(len(rows), {}, holdout, None, degraded=False)
    live = live_scores(task, rows["actual"].tolist(), rows["prediction"].tolist())
    name = primary_metric(task)
    if name not in holdout:
        return VersionQuality(len(rows), live, holdout, None, degraded=False)
    worse = drop(task, live[name], holdout[name])
    return VersionQuality(len(rows), live, holdout, worse, degraded=worse > cfg.max_metric_drop)


def holdout_metrics(models_dir: Path) -> dict[str, dict[str, float]]:
    """Holdout metrics by model version, from every bundle under models_dir (the served one
    and any other exported beside it)."""
    found: dict[str, dict[str, float]] = {}
    directories = [models_dir, *models_dir.iterdir()] if models_dir.is_dir() else []
    for directory in sorted(d for d in directories if (d / METADATA_FILE).is_file()):
        try:
            bundle = load_bundle(directory)
        except BundleError:
            continue
        found[bundle.version] = dict(bundle.metadata.get("metrics", {}))
    return found


def quality_report(task: str, rows: pd.DataFrame) -> Any:
    """Evidently's classification or regression report on the labelled rows."""
    frame = pd.DataFrame({"actual": rows["actual"], "prediction": rows["prediction"]})
    if task == "regression":
        frame = frame.astype(float)
        definition = DataDefinition(
            numerical_columns=["actual", "prediction"],
            regression=[Regression(target="actual", prediction="prediction")],
        )
        preset: Any = RegressionPreset()
    else:
        frame = frame.astype(str)
        labels = sorted(set(frame["actual"]) | set(frame["prediction"]))
        kind = BinaryClassification if len(labels) == 2 else MulticlassClassification
        options = {"pos_label": labels[1]} if len(labels) == 2 else {}
        definition = DataDefinition(
            categorical_columns=["actual", "prediction"],
            classification=[kind(target="actual", prediction_labels="prediction", **options)],
        )
        preset = ClassificationPreset()
    with warnings.catch_warnings():  # Evidently scores R² on one-row slices of its own
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return Report([preset]).run(Dataset.from_pandas(frame, data_definition=definition), None)


def _describe(version: str, quality: VersionQuality) -> str:
    live = ", ".join(f"{k} {v:.4f}" for k, v in quality.live.items())
    if quality.drop is None:
        return f"version {version}: {live} on {quality.labelled_rows} rows (no holdout metric)"
    verdict = "DEGRADED" if quality.degraded else "ok"
    change = f"{abs(100 * quality.drop):.1f}% {'worse' if quality.drop >= 0 else 'better'}"
    return (
        f"version {version}: {live} on {quality.labelled_rows} rows, "
        f"{change} than holdout ({verdict})"
    )
