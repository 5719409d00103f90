"""The Prefect flows, run for real against a temporary Prefect server (one per test session)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prefect import flow
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings
from prefect.testing.utilities import prefect_test_harness

from conftest import _wait_for_log, save_test_bundle
from {{ cookiecutter.package_name }}.bundle import load_bundle
from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.monitoring.simulate import shift, to_records
from {{ cookiecutter.package_name }}.orchestration import flows, schedule
from {{ cookiecutter.package_name }}.pipeline.data import prepare
from {{ cookiecutter.package_name }}.pipeline.train import train
from {{ cookiecutter.package_name }}.prediction_log.reader import Reader
from {{ cookiecutter.package_name }}.processed import read_split
from {{ cookiecutter.package_name }}.schema import Schema
from {{ cookiecutter.package_name }}.serving.app import create_app


@pytest.fixture(scope="module", autouse=True)
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Flow runs go to a temporary Prefect server and database, nothing to the project's."""
    home = tmp_path_factory.mktemp("prefect")
    with temporary_settings({PREFECT_HOME: home}), prefect_test_harness(server_startup_timeout=60):
        yield


def metadata(directory: Path) -> dict[str, Any]:
    """What a bundle holds, but the bytes of its model files (a zip records when it was made)."""
    found = load_bundle(directory).metadata
    return {k: found[k] for k in ("version", "metrics", "schema", "classes")} | {
        "files": sorted(found["files"])
    }


def test_training_flow_exports_the_bundle_make_train_does(settings: Settings) -> None:
    state = flows.run("training")

    assert state.is_completed(), state.message
    again = settings.model_copy(
        update={
            "data": settings.data.model_copy(update={"processed_dir": Path("again/data")}),
            "model": settings.model.model_copy(update={"models_dir": Path("again/models")}),
            "mlflow": settings.mlflow.model_copy(update={"tracking_uri": "sqlite:///again.db"}),
        }
    )
    prepare(again)
    train(again)
    assert metadata(settings.bundle_dir) == metadata(again.bundle_dir)


def send(settings: Settings, rows: list[dict[str, Any]], truth: str = "champion") -> None:
    """Score `rows` through the app (its rollout as set), then send as each row's true value
    the answer of `truth` (the model's role), as if it was always right."""
    with TestClient(create_app(settings)) as client:
        client.post("/predict", json={"instances": rows})
        shadow = settings.serving.rollout == "shadow"
        _wait_for_log(settings, len(rows) * (2 if shadow else 1))
        version = "2" if truth == "challenger" else load_bundle(settings.bundle_dir).version
        answers = Reader(settings.prediction_log.url).answers({version})[version]
        items = [{"request_id": r, "index": i, "actual": a} for (r, i), a in answers.items()]
        accepted = client.post("/feedback", json={"items": items}).json()["accepted"]
    assert accepted == len(rows)


def with_orchestration(settings: Settings, rollout: str, promote: str) -> Settings:
    """`settings` with this rollout, also as config.yaml for the flows, which read it; a
    challenger needs 10 labelled rows for a verdict."""
    changed = settings.model_copy(
        update={"serving": settings.serving.model_copy(update={"rollout": rollout})}
    )
    loop = {"orchestration": {"promote": promote, "min_challenger_rows": 10}}
    Path("config.yaml").write_text(json.dumps(changed.model_dump(mode="json") | loop))
    return changed


def test_monitoring_on_drifted_traffic_retrains_into_a_challenger(settings: Settings) -> None:
    prepare(settings)
    train(settings)
    split, schema = read_split(settings.data.processed_dir)
    drifted = shift(split.train.head(settings.serving.max_batch_size), schema)
    send(settings, to_records(drifted.drop(columns=schema.target)))

    state = flows.run("monitoring")

    assert state.is_completed(), state.message
    assert state.result().startswith("retrained: v2 is the challenger")
    assert load_bundle(settings.challenger_dir).version == "2"
    assert load_bundle(settings.bundle_dir).version == "1"


@pytest.mark.parametrize("mode", ["auto", "manual"])
def test_a_challenger_that_wins_on_live_traffic_is_promoted_in_auto_mode(
    settings: Settings, challenger_dir: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    prepare(settings)
    split, schema = read_split(settings.data.processed_dir)
    shadow = with_orchestration(settings, rollout="shadow", promote=mode)
    rows = to_records(split.test.drop(columns=schema.target))
    send(shadow, rows, truth="challenger")  # the challenger, which disagrees, is right
    promoted: list[str] = []
    monkeypatch.setattr(flows, "promote", lambda s: promoted.append("2") or "2")

    state = flows.run("monitoring")

    assert state.is_completed(), state.message
    if mode == "auto":
        assert promoted == ["2"] and state.result().startswith("promoted challenger v2")
    else:
        assert promoted == [] and "`make promote`" in state.result()


def test_a_challenger_that_lost_is_replaced_by_a_retrain_on_drift(
    settings: Settings, frame: pd.DataFrame, schema: Schema
) -> None:
    """A losing challenger does not hold up the loop: on drift, training runs again and its
    model takes the challenger's place."""
    prepare(settings)
    train(settings)
    reversed_targets = frame.assign(target=frame["target"].to_numpy()[::-1])
    save_test_bundle(settings.challenger_dir, reversed_targets, schema, version="2")
    shadow = with_orchestration(settings, rollout="shadow", promote="auto")
    split, processed = read_split(settings.data.processed_dir)
    drifted = shift(split.train.head(settings.serving.max_batch_size), processed)
    send(shadow, to_records(drifted.drop(columns=processed.target)))  # the champion is right

    state = flows.run("monitoring")

    assert state.is_completed(), state.message
    verdict, retrained = state.result().split("; ", 1)
    assert verdict == "challenger v2 does not beat the champion on the logged traffic"
    assert retrained.startswith("retrained: v2 is the challenger")
    assert load_bundle(settings.challenger_dir).metadata["run_id"] != "run-2"
    assert load_bundle(settings.bundle_dir).version == "1"


def test_a_step_is_retried_after_an_error_that_may_pass_never_after_a_user_error() -> None:
    calls = {"hiccup": 0, "mistake": 0}

    def hiccup() -> str:
        calls["hiccup"] += 1
        if calls["hiccup"] == 1:
            raise ConnectionError("tracking server hiccup")
        return "ok"

    def mistake() -> None:
        calls["mistake"] += 1
        raise UserError("data.target is not a column")

    @flow
    def two_steps() -> None:
        flows.step(hiccup).with_options(retry_delay_seconds=0)()
        flows.step(mistake).with_options(retry_delay_seconds=0)()

    state = two_steps(return_state=True)

    assert state.is_failed()
    assert calls == {"hiccup": 2, "mistake": 1}


def test_a_user_error_ends_the_run_failed_with_its_message(
    settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    prepare(settings)  # but nothing was logged: no prediction log yet

    state = flows.run("monitoring")

    assert state.is_failed()
    assert state.message.startswith("Only 0 predictions logged")
    assert "Traceback" not in "".join(capfd.readouterr())


def test_schedule_serves_both_flows_on_the_crons_of_the_config(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[Any] = []
    monkeypatch.setattr(schedule, "prefect_server", lambda: nullcontext(PREFECT_API_URL.value()))
    monkeypatch.setattr(schedule, "serve", lambda *deployments: served.extend(deployments))

    schedule.schedule(settings)

    crons = {d.name: d.schedules[0].schedule.cron for d in served}
    assert crons == {
        "training": settings.orchestration.training_cron,
        "monitoring": settings.orchestration.monitoring_cron,
    }


@pytest.mark.parametrize("cron", ["not a cron", "61 * * * *"])
def test_a_bad_cron_is_one_line_before_any_server_starts(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, cron: str
) -> None:
    def no_server() -> None:
        raise AssertionError("a Prefect server was started for a cron that cannot run")

    monkeypatch.setattr(schedule, "prefect_server", no_server)
    crons = settings.orchestration.model_copy(update={"monitoring_cron": cron})

    with pytest.raises(UserError, match=r"orchestration.monitoring_cron '.*' is not a cron"):
        schedule.schedule(settings.model_copy(update={"orchestration": crons}))
