"""Drift check: the latest logged predictions against the reference data, with Evidently."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.presets import DataDriftPreset

from ..bundle import BundleError, load_bundle
from ..config import Settings
from ..errors import UserError
from ..prediction_log.reader import Reader
from ..processed import read_reference
from ..schema import Schema

log = logging.getLogger(__name__)


class MonitoringError(UserError):
    """No meaningful drift check is possible yet; the message says what to do."""


@dataclass(frozen=True)
class ColumnDrift:
    score: float  # a p-value or a distance, depending on `method`
    drifted: bool
    method: str
    threshold: float


@dataclass(frozen=True)
class DriftSummary:
    drift_detected: bool
    drifted_share: float
    drift_share_threshold: float
    drifted_columns: tuple[str, ...]
    columns: dict[str, ColumnDrift]
    rows_compared: int
    reference_rows: int
    window: int
    first_prediction_at: str
    last_prediction_at: str
    model_versions: tuple[str, ...]
    generated_at: str
    report_path: Path


def monitor(settings: Settings) -> DriftSummary:
    """The `monitor` stage: write reports/drift_report.html and drift_summary.json."""
    cfg = settings.monitoring
    report_path = cfg.reports_dir / "drift_report.html"
    summary_path = cfg.reports_dir / "drift_summary.json"
    # A report on disk always describes the latest check. When no check is possible, an older
    # report would be read (by a person, a dashboard or the scheduled CI job) as the current
    # answer, so it is removed before anything can fail.
    report_path.unlink(missing_ok=True)
    summary_path.unlink(missing_ok=True)
    reference, schema = read_reference(settings.data.processed_dir)
    logged = Reader(settings.prediction_log.url).latest(cfg.window)
    if len(logged) < cfg.min_rows:
        raise MonitoringError(
            f"Only {len(logged)} predictions logged, at least {cfg.min_rows} are needed for a "
            "drift report that means something (monitoring.min_rows): start the service (`make "
            "serve`) and send it traffic (`make simulate`)."
        )
    _check_every_feature_sent(logged, schema, settings.bundle_dir)
    current, reference = as_schema_frame(logged, schema), as_schema_frame(reference, schema)
    snapshot = drift_report(current, reference, schema, cfg.drift_share)
    cfg.reports_dir.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(report_path))
    columns, share = column_drift(snapshot.dict())
    drifted = tuple(name for name, column in columns.items() if column.drifted)
    created = pd.to_datetime(logged["created_at"], utc=True)
    summary = DriftSummary(
        drift_detected=share >= cfg.drift_share,  # the rule of Evidently's dataset-level test
        drifted_share=share,
        drift_share_threshold=cfg.drift_share,
        drifted_columns=drifted,
        columns=columns,
        rows_compared=len(logged),
        reference_rows=len(reference),
        window=cfg.window,
        first_prediction_at=created.min().isoformat(),
        last_prediction_at=created.max().isoformat(),
        model_versions=tuple(sorted(logged["model_version"].astype(str).unique())),
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        report_path=report_path,
    )
    # Written last: a summary on disk means the HTML report next to it is complete.
    summary_path.write_text(json.dumps(asdict(summary), indent=2, default=str))
    log.info(
        "%s: %d of %d columns drifted (%.0f%%, threshold %.0f%%) in the latest %d predictions "
        "vs %d reference rows%s. Report: %s",
        "DRIFT DETECTED" if summary.drift_detected else "No drift",
        *(len(drifted), len(columns), 100 * share, 100 * cfg.drift_share),
        *(len(logged), len(reference)),
        f" ({shortlist(drifted)})" if drifted else "",
        report_path,
    )
    return summary


def shortlist(names: tuple[str, ...], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def as_schema_frame(df: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """The schema's features in its order and types, as the service turns requests into rows."""
    return schema.frame(cast(list[dict[str, Any]], df.to_dict(orient="records")))


def _check_every_feature_sent(logged: pd.DataFrame, schema: Schema, models_dir: Path) -> None:
    """A feature missing from every prediction cannot be compared, and is an alarm of its own,
    whose fix depends on whether the model that answered takes it at all."""
    missing = [name for name in schema.names if name not in logged or logged[name].isna().all()]
    if not missing:
        return
    versions = sorted(logged["model_version"].astype(str).unique())
    try:
        served = load_bundle(models_dir)
    except BundleError:
        served = None
    if served is None or (served.version in versions and set(missing) <= set(served.schema.names)):
        cause = "the clients stopped sending them. Fix the clients; retraining will not help."
    elif served.version in versions:
        cause = (
            f"the data changed since model v{served.version} was trained (`make data` made a new "
            "reference): train on it (`make train`), serve the new model, monitor its traffic."
        )
    else:
        cause = (
            f"they were answered by model v{', v'.join(versions)}, not by v{served.version} in "
            f"{models_dir}/: reload the service (`kill -HUP <its pid>`) and send it traffic."
        )
    raise MonitoringError(
        f"Feature(s) {', '.join(missing)} missing from all of the latest {len(logged)} "
        f"predictions: {cause}"
    )


def drift_report(
    current: pd.DataFrame, reference: pd.DataFrame, schema: Schema, drift_share: float
) -> Snapshot:
    """Run Evidently's data drift preset; per-column tests included so it decides each column."""
    definition = DataDefinition(
        numerical_columns=schema.numeric, categorical_columns=schema.categorical
    )
    report = Report([DataDriftPreset(drift_share=drift_share)], include_tests=True)
    return report.run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )


def column_drift(result: dict[str, Any]) -> tuple[dict[str, ColumnDrift], float]:
    """Each column's drift and the share of drifted columns: Evidently's own answers, read from
    `snapshot.dict()`.

    Each column's test is a p-value (drift when below the threshold) for small reference sets and
    a distance (drift when above it) beyond 1000 reference rows, so the per-column decision is
    taken from the status of Evidently's test for that column, never from comparing the score.
    """
    metrics = {m["id"]: m for m in result["metrics"]}
    columns: dict[str, ColumnDrift] = {}
    for test in result["tests"]:
        params = test["metric_config"]["params"]
        if params["type"] == "evidently:metric_v2:ValueDrift":
            columns[params["column"]] = ColumnDrift(
                score=float(metrics[test["metric_config"]["metric_id"]]["value"]),
                drifted=test["status"] == "FAIL",
                method=params["method"],
                threshold=float(params["threshold"]),
            )
    share = next(
        float(m["value"]["share"])
        for m in result["metrics"]
        if m["config"]["type"] == "evidently:metric_v2:DriftedColumnsCount"
    )
    return columns, share
