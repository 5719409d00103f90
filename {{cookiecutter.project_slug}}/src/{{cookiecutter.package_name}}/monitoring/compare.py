"""`make compare`: the champion against the challenger on the traffic the service logged.

The two are told apart by version (models/metadata.json and models/challenger/metadata.json).
Rows of one request row that both scored (serving.rollout shadow) are paired by request id and
row index: how often they agree. Rows with a true value (POST /feedback) give each its live
quality. The log keeps no per-row latency: compare the roles' latency in /metrics instead.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from ..bundle import BundleError, load_bundle
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
    labelled: int = 0
    live: dict[str, float] = field(default_factory=dict)


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
        champion, challenger = (
            load_bundle(settings.bundle_dir),
            load_bundle(settings.challenger_dir),
        )
    except BundleError as exc:
        raise CompareError(f"Nothing to compare: {exc}") from None
    reader = Reader(settings.prediction_log.url)
    rows = reader.answers({champion.version, challenger.version})
    if not rows.get(challenger.version):
        raise CompareError(
            f"The prediction log has no answer of challenger v{challenger.version}: serve with "
            "serving.rollout shadow or canary and send traffic (make simulate) first."
        )
    labels = reader.labels()
    ours, theirs = rows.get(champion.version, {}), rows[challenger.version]
    paired = [(ours[k], theirs[k]) for k in ours.keys() & theirs.keys()]
    task = champion.schema.task
    result = Comparison(
        task=task,
        champion=_summary(champion.version, ours, labels, task),
        challenger=_summary(challenger.version, theirs, labels, task),
        paired_rows=len(paired),
        agreement=_mean([a == b for a, b in paired]) if task == "classification" else None,
        mean_abs_difference=_mean([abs(a - b) for a, b in paired])
        if task == "regression"
        else None,
    )
    settings.monitoring.reports_dir.mkdir(parents=True, exist_ok=True)
    path = settings.monitoring.reports_dir / SUMMARY_FILE
    path.write_text(json.dumps(asdict(result), indent=2))
    for line in _table(result):
        log.info("%s", line)
    log.info("Latency: %s. Summary: %s", result.latency, path)
    return result


def _summary(
    version: str, answers: dict[Key, Any], labels: dict[Key, Any], task: str
) -> RoleSummary:
    pairs = [(labels[k], p) for k, p in answers.items() if k in labels]
    summary = RoleSummary(version, len(answers), len(pairs))
    if not pairs:
        return summary
    actual, predicted = zip(*pairs, strict=True)
    summary.live = live_scores(task, list(actual), list(predicted))
    return summary


def _mean(values: list[Any]) -> float | None:
    return sum(values) / len(values) if values else None


def _table(result: Comparison) -> list[str]:
    metrics = sorted({*result.champion.live, *result.challenger.live})
    lines = [
        f"{'role':<11} {'version':>7} {'rows':>7} {'labelled':>8} "
        + " ".join(f"{m:>9}" for m in metrics)
    ]
    for role, s in (("champion", result.champion), ("challenger", result.challenger)):
        values = " ".join(f"{s.live[m]:>9.4f}" if m in s.live else f"{'-':>9}" for m in metrics)
        lines.append(f"{role:<11} {s.version:>7} {s.rows:>7} {s.labelled:>8} {values}")
    if result.agreement is not None:
        lines.append(f"Agreement on {result.paired_rows} shadowed rows: {result.agreement:.1%}")
    elif result.mean_abs_difference is not None:
        lines.append(
            f"Mean absolute difference on {result.paired_rows} shadowed rows: "
            f"{result.mean_abs_difference:.4f}"
        )
    else:
        lines.append("No shadowed rows to pair (canary answers each row with one model).")
    return lines
