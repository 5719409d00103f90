"""`make compare`: the champion against the challenger on the traffic the service logged.

The two are told apart by version (models/metadata.json and models/challenger/metadata.json).
Rows of one request row that both scored (serving.rollout shadow) are paired by request id and
row index: how often they agree. Rows with a true value (POST /feedback) give each its live
quality. The log keeps no per-row latency: compare the roles' latency in /metrics instead.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from ..bundle import METADATA_FILE, BundleError, load_bundle
from ..config import Settings
from ..errors import UserError
from ..metrics import live_scores
from ..prediction_log.reader import Key, Reader

log = logging.getLogger(__name__)
SUMMARY_FILE = "compare_summary.json"


class CompareError(UserError):
    """No challenger, or no logged traffic of it."""


@dataclass
class RoleSummary:
    version: str
    rows: int
    labelled: int
    live: dict[str, float]


@dataclass
class Comparison:
    task: str
    champion: RoleSummary
    challenger: RoleSummary
    paired_rows: int
    agreement: float | None  # share of paired rows with the same answer (classification)
    mean_abs_difference: float | None  # between paired answers (regression)
    latency: str = "not logged per row: see http_request_duration_seconds in /metrics"


def compare(settings: Settings) -> Comparison:
    """Compare, log a short table and write reports/compare_summary.json."""
    try:
        champion = load_bundle(settings.bundle_dir)
        if not (settings.challenger_dir / METADATA_FILE).is_file():
            raise CompareError(
                f"There is no challenger to compare with champion v{champion.version}: `make "
                f"train` puts one in {settings.challenger_dir}/ when the model it trains does not "
                "beat the champion, or has other features. Train one (on other data, or with "
                "other model settings), then serve with serving.rollout shadow or canary."
            )
        challenger = load_bundle(settings.challenger_dir)
    except BundleError as exc:
        raise CompareError(f"Nothing to compare: {exc}") from None
    reader = Reader(settings.prediction_log.url)
    rows = reader.answers({champion.version, challenger.version})
    if not rows.get(challenger.version):
        raise CompareError(
            f"The prediction log has no answer of challenger v{challenger.version}: serve with "
            "serving.rollout shadow or canary and send traffic (make simulate) first."
        )
    labels, task = reader.labels(), champion.schema.task
    ours, theirs = rows.get(champion.version, {}), rows[challenger.version]
    classification = task == "classification"
    paired = [(ours[key], theirs[key]) for key in ours.keys() & theirs.keys()]
    differences = [a == b if classification else abs(a - b) for a, b in paired]
    mean = sum(differences) / len(differences) if differences else None
    result = Comparison(
        task=task,
        champion=_summary(champion.version, ours, labels, task),
        challenger=_summary(challenger.version, theirs, labels, task),
        paired_rows=len(differences),
        agreement=mean if classification else None,
        mean_abs_difference=None if classification else mean,
    )
    settings.monitoring.reports_dir.mkdir(parents=True, exist_ok=True)
    path = settings.monitoring.reports_dir / SUMMARY_FILE
    path.write_text(json.dumps(asdict(result), indent=2))
    roles = {"champion": result.champion, "challenger": result.challenger}
    table = pd.DataFrame([{**asdict(role), **role.live} for role in roles.values()], roles)
    if mean is None:
        pairing = "No shadowed rows to pair (canary answers each row with one model)."
    elif classification:
        pairing = f"Agreement on {len(differences)} shadowed rows: {mean:.1%}"
    else:
        pairing = f"Mean absolute difference on {len(differences)} shadowed rows: {mean:.4f}"
    text = table.drop(columns="live").to_string(float_format="{:.4f}".format, na_rep="-")
    log.info("Champion and challenger on the logged traffic:\n%s\n%s", text, pairing)
    log.info("Latency: %s. Summary: %s", result.latency, path)
    return result


def _summary(
    version: str, answers: dict[Key, Any], labels: dict[Key, Any], task: str
) -> RoleSummary:
    labelled = [key for key in answers if key in labels]
    actual, predicted = [labels[k] for k in labelled], [answers[k] for k in labelled]
    live = live_scores(task, actual, predicted) if labelled else {}
    return RoleSummary(version, len(answers), len(labelled), live)
