"""The registry's aliases and the champion's history: who serves, who waits, who served before.

    @champion            the model models/ holds and the service answers with
    @challenger          a newer model that did not beat the champion; models/challenger/
    @previous-champion   the champion before this one: what `make rollback` brings back

Every change of champion is appended to the registered model's tag `champion_history` (a JSON
list of versions), so a rollback can go back more than one step and the MLflow UI shows the
history next to the aliases.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous-champion"
HISTORY_TAG = "champion_history"


def version_by_alias(client: MlflowClient, name: str, alias: str) -> Any | None:
    """The ModelVersion behind `alias`, or None when no version has it (or no model exists)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def history(client: MlflowClient, name: str) -> list[str]:
    """The champion versions, oldest first (the last one serves now)."""
    tags = client.get_registered_model(name).tags
    versions: list[str] = json.loads(tags.get(HISTORY_TAG, "[]"))
    return versions


def crown(client: MlflowClient, name: str, version: str) -> None:
    """Make `version` the champion; the one it replaces becomes @previous-champion. A new
    champion also ends the old challenge: @challenger is removed."""
    versions = [v for v in history(client, name) if v != version]
    current = version_by_alias(client, name, CHAMPION)
    if current is not None and str(current.version) not in versions:
        versions.append(str(current.version))  # a champion from before the history was kept
    _write(client, name, [*versions, version])
    remove_alias(client, name, CHALLENGER)


def step_back(client: MlflowClient, name: str) -> tuple[str, str] | None:
    """Give @champion back to the previous champion: (the version that leaves, the one that
    serves again), or None when there is no previous champion."""
    versions = history(client, name)
    if len(versions) < 2:
        return None
    leaving = versions.pop()
    client.set_model_version_tag(name, leaving, "rolled_back", "true")
    _write(client, name, versions)
    return leaving, versions[-1]


def remove_alias(client: MlflowClient, name: str, alias: str) -> None:
    if version_by_alias(client, name, alias) is not None:
        client.delete_registered_model_alias(name, alias)


def _write(client: MlflowClient, name: str, versions: list[str]) -> None:
    """Record the history and point @champion and @previous-champion at its last two."""
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(versions))
    client.set_registered_model_alias(name, CHAMPION, versions[-1])
    if len(versions) > 1:
        client.set_registered_model_alias(name, PREVIOUS, versions[-2])
    else:
        remove_alias(client, name, PREVIOUS)
    log.info("Model %s: v%s is @%s.", name, versions[-1], CHAMPION)
