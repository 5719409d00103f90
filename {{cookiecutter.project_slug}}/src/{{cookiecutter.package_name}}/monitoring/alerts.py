"""Alerts: tell a chat channel when monitoring finds drift or a drop in live quality.

The message is the JSON an incoming webhook of Slack, Microsoft Teams or Discord takes: `text`
(Slack, Teams) and `content` (Discord) carry the same summary and where to look. Sending is
best effort: a webhook that fails is one error line, and the monitoring result still decides the
exit status.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from ..config import Settings
from .drift import DriftSummary, shortlist
from .quality import QualitySummary

log = logging.getLogger(__name__)
MAX_CHARACTERS = 1900  # Discord refuses messages over 2000 characters
GITHUB_RUN = ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")


def notify(settings: Settings, drift: DriftSummary, quality: QualitySummary) -> list[str]:
    """Post the findings, one sentence per problem (drift, each degraded version), to the
    webhook, if any; return them."""
    found = []
    if drift.drift_detected:
        found.append(
            f"Data drift: {len(drift.drifted_columns)} of {len(drift.columns)} features drifted "
            f"({shortlist(drift.drifted_columns)}) in the latest {drift.rows_compared} predictions."
        )
    metric = quality.primary_metric
    for version, result in quality.versions.items():
        if result.degraded and result.drop is not None:
            found.append(
                f"Model version {version}: live {metric} {result.live[metric]:.4f} vs "
                f"{result.holdout[metric]:.4f} on the holdout set ({result.drop:.0%} worse, "
                f"{result.labelled_rows} labelled predictions)."
            )
    if found:
        announce(settings, found)
    return found


def announce(settings: Settings, lines: list[str]) -> None:
    """Post `lines` to the webhook, if one is set, with where to look: the CI run that found it
    (GitHub Actions, GitLab CI), else the reports folder."""
    secret = settings.monitoring.alert_webhook_url
    url = secret.get_secret_value() if secret else ""  # CI passes an unset secret as ""
    if not url:
        log.info("No alert sent: set ML_MONITORING__ALERT_WEBHOOK_URL to get one.")
        return
    github = [os.environ.get(k) for k in GITHUB_RUN]
    run = "{}/{}/actions/runs/{}".format(*github) if all(github) else os.environ.get("CI_JOB_URL")
    where = run or settings.monitoring.reports_dir
    text = f"[{settings.model.registered_name}] {' '.join(lines)} See {where}"
    send(url, {"text": text[:MAX_CHARACTERS], "content": text[:MAX_CHARACTERS]})


def send(url: str, body: dict[str, str]) -> bool:
    """POST `body` as JSON to `url`; False (and one error line, URL masked) when it fails."""
    if urlsplit(url).scheme not in {"http", "https"}:
        log.error("Alert not sent: monitoring.alert_webhook_url must be an http(s) URL.")
        return False
    headers = {"Content-Type": "application/json"}  # the scheme is checked above: no file://
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        log.error("Alert not sent to %s: it answered %s %s.", mask(url), exc.code, exc.reason)
        return False
    except OSError as exc:  # URLError included: nothing answered
        log.error("Alert not sent to %s: %s.", mask(url), getattr(exc, "reason", None) or exc)
        return False
    log.info("Alert sent to %s.", mask(url))
    return True


def mask(url: str) -> str:
    """Scheme and host only: a webhook's path is its secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}/***" if parts.hostname else "the webhook"
