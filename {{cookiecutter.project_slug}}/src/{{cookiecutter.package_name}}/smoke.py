"""Smoke check of a running service, from outside: up, ready, answering right, and how fast.

CD runs it after each deploy and you can run it against any URL: `make smoke URL=https://...`.
Standard library only (urllib), so it needs nothing beyond the package itself.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

log = logging.getLogger(__name__)
TIMEOUT_SECONDS = 30.0  # one request; the first answer of a just-woken instance can be slow
POLL_SECONDS = 2.0  # between two tries while waiting for /ready
PROGRESS_SECONDS = 10.0  # a progress line this often while waiting


class SmokeError(UserError):
    """A check of the running service failed; the message names the check."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # the JSON body, or None when the body is not JSON
    seconds: float


@dataclass(frozen=True)
class SmokeReport:
    model_version: str
    predictions: int
    waited_seconds: float
    p50_ms: float
    p95_ms: float


def call(
    url: str, payload: Any = None, timeout: float = TIMEOUT_SECONDS, api_key: str | None = None
) -> Answer:
    """GET `url`, or POST `payload` as JSON (with the API key, if any); an HTTP error status is
    an answer, not an error.

    Raises OSError (URLError, timeouts) when nothing answers."""
    data = None if payload is None else json.dumps(payload).encode()
    headers = {} if data is None else {"Content-Type": "application/json"}
    if api_key and data is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=data, headers=headers)
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    seconds = time.perf_counter() - start
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    return Answer(status, body, seconds)


def wait_until_ready(base_url: str, wait_seconds: float) -> tuple[Answer, float]:
    """Poll /ready until it answers 200; a sleeping free instance wakes on the first request.

    Returns the answer and the seconds waited."""
    start = time.monotonic()
    deadline, next_progress = start + wait_seconds, start + PROGRESS_SECONDS
    while True:
        try:
            answer = call(f"{base_url}/ready")
            if answer.status == 200:
                return answer, time.monotonic() - start
            reason = f"answered {answer.status}"
        except OSError as error:
            reason = f"no answer ({getattr(error, 'reason', error)})"
        now = time.monotonic()
        if now >= deadline:
            raise SmokeError(
                f"/ready: {reason} after waiting {wait_seconds:.0f} s; is the service running "
                f"at {base_url}?"
            )
        if now >= next_progress:
            waited = now - start
            log.info(
                "Waiting for %s/ready: %s (%.0f s of %.0f)", base_url, reason, waited, wait_seconds
            )
            next_progress = now + PROGRESS_SECONDS
        time.sleep(min(POLL_SECONDS, max(deadline - now, 0.0)))


def expect(check: str, answer: Answer, keys: list[str]) -> dict[str, Any]:
    """The JSON object of a 200 answer that has `keys`, or a SmokeError naming the check."""
    if answer.status != 200:
        raise SmokeError(f"{check}: answered {answer.status}, expected 200 ({answer.body})")
    body = answer.body
    if not isinstance(body, dict):
        raise SmokeError(f"{check}: the answer is not a JSON object: {body!r}")
    missing = [key for key in keys if key not in body]
    if missing:
        raise SmokeError(f"{check}: the answer has no {', '.join(missing)}: {body!r}")
    return body


def smoke(
    base_url: str,
    sample_file: Path,
    requests: int = 20,
    wait: float = 180,
    api_key: str | None = None,
) -> SmokeReport:
    """The `smoke` stage: check /health, /ready, /metadata and /predict, then measure latency.
    `api_key` is sent to /predict (serving.api_key of the service)."""
    base_url = base_url.rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise SmokeError(f"--url {base_url!r} must start with http:// or https://.")
    if requests < 1:
        raise SmokeError(f"--requests must be at least 1, not {requests}.")
    if not sample_file.is_file():
        raise SmokeError(f"{sample_file} not found: run `make train`, which writes it.")
    sample = json.loads(sample_file.read_text(encoding="utf-8"))
    log.info("Smoke check of %s", base_url)

    ready, waited = wait_until_ready(base_url, wait)
    version = str(expect("/ready", ready, ["model_version"])["model_version"])
    try:
        health = expect("/health", call(f"{base_url}/health"), ["status"])
        metadata = expect("/metadata", call(f"{base_url}/metadata"), ["name", "version"])
        first = check_predict(base_url, sample, api_key=api_key)
        latencies = [first.seconds] + [
            check_predict(base_url, sample, number, api_key).seconds
            for number in range(2, requests + 1)
        ]
    except OSError as error:
        raise SmokeError(f"{base_url} stopped answering: {error}") from error
    report = SmokeReport(
        model_version=str(first.body["model_version"]),
        predictions=len(first.body["predictions"]),
        waited_seconds=waited,
        p50_ms=1000 * statistics.median(latencies),
        p95_ms=1000 * percentile(latencies, 95),
    )
    rows = [
        ("/health", f"{health['status']}"),
        ("/ready", f"model version {version}, ready after {waited:.0f} s"),
        ("/metadata", f"{metadata['name']} version {metadata['version']}"),
        ("/predict", f"{report.predictions} predictions, model version {report.model_version}"),
        ("latency", f"p50 {report.p50_ms:.0f} ms, p95 {report.p95_ms:.0f} ms, {requests} requests"),
    ]
    for check, result in rows:
        log.info("  %-10s %s", check, result)
    log.info("Smoke check passed.")
    return report


def check_predict(
    base_url: str, sample: dict[str, Any], number: int = 1, api_key: str | None = None
) -> Answer:
    """POST the sample request: one prediction per instance, and the version that answered."""
    answer = call(f"{base_url}/predict", sample, api_key=api_key)
    check = "/predict" if number == 1 else f"/predict (request {number})"
    body = expect(check, answer, ["predictions", "model_version"])
    expected = len(sample["instances"])
    if not isinstance(body["predictions"], list) or len(body["predictions"]) != expected:
        raise SmokeError(f"{check}: expected {expected} predictions, got {body['predictions']!r}")
    if not body["model_version"]:
        raise SmokeError(f"{check}: the answer has an empty model_version")
    return answer


def percentile(values: list[float], percent: int) -> float:
    """The `percent`th percentile (inclusive method: never outside the measured range)."""
    if len(values) < 2:
        return max(values)
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]
