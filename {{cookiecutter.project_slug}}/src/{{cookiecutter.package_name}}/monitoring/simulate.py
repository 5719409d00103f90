"""Traffic for the running service: held-out rows, optionally shifted so that drift shows, and
later the true values of some of them, as real labels come back: late and partly."""

from __future__ import annotations

import json
import logging
import time
from typing import Any, cast

import httpx
import numpy as np
import pandas as pd

from ..config import Settings
from ..errors import UserError
from ..processed import read_split
from ..schema import Schema

log = logging.getLogger(__name__)
BATCH_SIZE = 25
DRIFT_STDS = 1.5  # numeric features move by this many standard deviations under --drift


class SimulationError(UserError):
    """The service cannot be reached or refuses the rows."""


def simulate(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    rows: int | None = None,
    drift: bool = False,
    feedback_share: float = 0.5,
    feedback_delay: float = 2.0,
) -> int:
    """The `simulate` stage: POST held-out rows to /predict in batches; return how many. Then,
    after `feedback_delay` seconds, POST the true values of a random `feedback_share` of them to
    /feedback. Under `drift` these are the values of the unshifted rows, so live quality drops.

    `rows=None` sends every held-out row once. More rows than that repeat them, and repeated rows
    make the drift tests over-confident: they see more rows than there is information in.
    """
    if not 0 <= feedback_share <= 1 or feedback_delay < 0:
        raise SimulationError("--feedback-share must be in [0, 1] and --feedback-delay >= 0.")
    split, schema = read_split(settings.data.processed_dir)
    held_out = len(split.test)
    rows = held_out if rows is None else rows
    if rows < 1:
        raise SimulationError(f"--rows must be at least 1, not {rows}.")
    if rows > held_out:
        log.warning(
            "Only %d held-out rows: sending them repeatedly. Repeated rows can make the drift "
            "report flag columns that did not drift; send at most %d for a fair report.",
            *(held_out, held_out),
        )
    test = split.test.iloc[np.arange(rows) % held_out].reset_index(drop=True)  # cycled
    features = shift(test[schema.names], schema) if drift else test[schema.names]
    records, truths = to_records(features), test[schema.target].tolist()
    labelled = np.random.default_rng(settings.random_state).random(rows) < feedback_share
    base_url = f"http://{host or settings.serving.host}:{port or settings.serving.port}"
    batch = min(BATCH_SIZE, settings.serving.max_batch_size)
    log.info("Sending %d %s rows to %s/predict", rows, "drifted" if drift else "held-out", base_url)
    key = settings.serving.api_key
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
    labels: list[dict[str, Any]] = []
    with httpx.Client(base_url=base_url, timeout=30, headers=headers) as client:
        for start in range(0, rows, batch):
            answer = _post(client, "/predict", {"instances": records[start : start + batch]})
            labels += [
                {"request_id": answer["request_id"], "index": i, "actual": truths[start + i]}
                for i in range(min(batch, rows - start))
                if labelled[start + i]
            ]
            done = min(start + batch, rows)
            if done % (4 * batch) == 0 or done == rows:
                version = answer["model_version"]
                log.info("  %d/%d rows answered (model version %s)", done, rows, version)
        if labels:
            send_feedback(client, labels, batch, feedback_delay)
    return rows


def send_feedback(
    client: httpx.Client, labels: list[dict[str, Any]], batch: int, delay: float
) -> None:
    """POST the true values to /feedback after `delay` seconds, as they would arrive later."""
    log.info("In %.0f s: the true values of %d rows to /feedback", delay, len(labels))
    time.sleep(delay)
    totals = dict.fromkeys(("accepted", "duplicates", "conflicts", "unknown", "invalid"), 0)
    for start in range(0, len(labels), batch):
        answer = _post(client, "/feedback", {"items": labels[start : start + batch]})
        for key in totals:  # a count, or the list of the items concerned
            totals[key] += answer[key] if isinstance(answer[key], int) else len(answer[key])
    log.info("  true values: %s", ", ".join(f"{n} {key}" for key, n in totals.items()))


def shift(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Drifted copy: numbers move up by DRIFT_STDS standard deviations, every category becomes
    the rarest one seen (a known category: the mix drifts, not the vocabulary)."""
    drifted = frame.copy()
    for name in schema.numeric:
        std = float(frame[name].std())
        drifted[name] = frame[name] + DRIFT_STDS * (std if std > 0 else 1.0)
    for name in schema.categorical:
        counts = frame[name].value_counts()
        if not counts.empty:
            drifted[name] = str(counts.idxmin())
    integers = [f.name for f in schema.features if f.dtype == "integer"]
    drifted[integers] = drifted[integers].round().astype("Int64")
    return drifted


def to_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows: plain Python values, NaN -> None (null)."""
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records", double_precision=15))
    return records


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        response = client.post(path, json=body)
    except httpx.ConnectError as exc:
        raise SimulationError(
            f"Nothing answers at {client.base_url}: start the service with `make serve` "
            "(in another terminal), then run this again."
        ) from exc
    except httpx.TransportError as exc:
        raise SimulationError(f"The service at {client.base_url} stopped answering: {exc}") from exc
    if response.is_error:
        raise SimulationError(
            f"The service answered {response.status_code} to {path}: {response.text[:500]}"
        )
    return cast(dict[str, Any], response.json())
