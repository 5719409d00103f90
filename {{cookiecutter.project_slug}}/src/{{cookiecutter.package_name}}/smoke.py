"""Smoke check of a running service, from outside: up, ready, answering right, and how fast.

CD runs it after each deploy and you can run it against any URL: `make smoke URL=https://...`.
Its requests say `X-Traffic: smoke`: answered and logged like any other, but left out of
monitoring. Standard library only (urllib), so it needs nothing beyond the package itself.
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
class SmokeReport:
    model_version: str
    predictions: int
    waited_seconds: float
    p50_ms: float
    p95_ms: float


Answer = tuple[int, Any, float]  # the status, the JSON body (None when not JSON), the seconds


def smoke(
    base_url: str,
    sample_file: Path,
    requests: int = 20,
    wait: float = 180,
    api_key: str | None = None,
) -> SmokeReport:
    """The `smoke` stage: check /health, /ready and /metadata, then POST the sample request
    `requests` times to /predict (with the API key, if any) for the latency."""
    base_url = base_url.rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise SmokeError(f"--url {base_url!r} must start with http:// or https://.")
    if requests < 1:
        raise SmokeError(f"--requests must be at least 1, not {requests}.")
    if not sample_file.is_file():
        raise SmokeError(f"{sample_file} not found: run `make train`, which writes it.")
    sample = json.loads(sample_file.read_text(encoding="utf-8"))
    rows = len(sample["instances"])
    log.info("Smoke check of %s", base_url)

    ready, waited = _wait_until_ready(base_url, wait)
    version = _check("/ready", ready, "model_version")["model_version"]
    try:
        health = _check("/health", _call(f"{base_url}/health"), "status")
        metadata = _check("/metadata", _call(f"{base_url}/metadata"), "name", "version")
        answers = []
        for number in range(1, requests + 1):
            answers.append(_call(f"{base_url}/predict", sample, api_key))
            check = "/predict" if number == 1 else f"/predict (request {number})"
            _check(check, answers[-1], "predictions", "model_version", rows=rows)
    except OSError as error:
        raise SmokeError(f"{base_url} stopped answering: {error}") from error
    latencies = [seconds for _, _, seconds in answers]
    answered = str(answers[0][1]["model_version"])
    # The inclusive method never gives a figure outside the measured range.
    tail = statistics.quantiles(latencies, n=20, method="inclusive") if requests > 1 else latencies
    p50, p95 = 1000 * statistics.median(latencies), 1000 * tail[-1]
    log.info("  /health    %s", health["status"])
    log.info("  /ready     model version %s, ready after %.0f s", version, waited)
    log.info("  /metadata  %s version %s", metadata["name"], metadata["version"])
    log.info("  /predict   %d predictions, model version %s", rows, answered)
    log.info("  latency    p50 %.0f ms, p95 %.0f ms, %d requests", p50, p95, requests)
    log.info("Smoke check passed.")
    return SmokeReport(answered, rows, waited, p50, p95)


def _call(url: str, payload: Any = None, api_key: str | None = None) -> Answer:
    """GET `url`, or POST `payload` as JSON (with the API key, if any). An HTTP error status is
    an answer; OSError (URLError, timeouts) means nothing answered."""
    data = None if payload is None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-Traffic": "smoke"}
    if api_key and data is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data, headers)
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    seconds = time.perf_counter() - start
    try:
        return status, json.loads(raw), seconds
    except ValueError:
        return status, None, seconds


def _wait_until_ready(base_url: str, wait: float) -> tuple[Answer, float]:
    """Poll /ready until it answers 200 (a sleeping free instance wakes on the first request):
    the answer and the seconds waited."""
    start = time.monotonic()
    deadline, next_progress = start + wait, start + PROGRESS_SECONDS
    while True:
        try:
            answer = _call(f"{base_url}/ready")
            if answer[0] == 200:
                return answer, time.monotonic() - start
            reason = f"answered {answer[0]}"
        except OSError as error:
            reason = f"no answer ({getattr(error, 'reason', error)})"
        now = time.monotonic()
        if now >= deadline:
            at = f"is the service running at {base_url}?"
            raise SmokeError(f"/ready: {reason} after waiting {wait:.0f} s; {at}")
        if now >= next_progress:
            waited = now - start
            log.info("Waiting for %s/ready: %s (%.0f s of %.0f)", base_url, reason, waited, wait)
            next_progress = now + PROGRESS_SECONDS
        time.sleep(min(POLL_SECONDS, max(deadline - now, 0.0)))


def _check(check: str, answer: Answer, *keys: str, rows: int | None = None) -> dict[str, Any]:
    """The JSON object of a 200 answer that has `keys` (and a prediction for each of `rows`,
    from a named model), or a SmokeError naming the check."""
    status, body, _ = answer
    if status != 200:
        raise SmokeError(f"{check}: answered {status}, expected 200 ({body})")
    if not isinstance(body, dict):
        raise SmokeError(f"{check}: the answer is not a JSON object: {body!r}")
    if missing := [key for key in keys if key not in body]:
        raise SmokeError(f"{check}: the answer has no {', '.join(missing)}: {body!r}")
    predictions = body.get("predictions")
    if rows is not None and (not isinstance(predictions, list) or len(predictions) != rows):
        raise SmokeError(f"{check}: expected {rows} predictions, got {predictions!r}")
    if rows is not None and not body["model_version"]:
        raise SmokeError(f"{check}: the answer has an empty model_version")
    return body
