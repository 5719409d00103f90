"""Traffic simulation against a real HTTP server on a free port (no mocked client)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from conftest import StubServer, serving
from {{ cookiecutter.package_name }}.cli import app
from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.monitoring.simulate import SimulationError, simulate
from {{ cookiecutter.package_name }}.pipeline.data import prepare
from {{ cookiecutter.package_name }}.processed import read_split


class Recorder(StubServer):
    """Answers /predict and /feedback like the service; `status` breaks /predict."""

    def __init__(self) -> None:
        super().__init__({"/predict": self.predict, "/feedback": self.feedback})
        self.status = 200

    @property
    def batches(self) -> list[list[dict[str, Any]]]:
        return [body["instances"] for body in self.bodies("/predict")]

    @property
    def authorizations(self) -> dict[str, list[str | None]]:
        """The Authorization header of each POST, by path."""
        found: dict[str, list[str | None]] = {}
        for path, _, headers in self.received:
            found.setdefault(path, []).append(headers.get("Authorization"))
        return found

    def predict(self, body: Any) -> tuple[int, Any]:
        if self.status != 200:
            return self.status, {"detail": "instances.0.age: Input should be a valid number"}
        rows = len(body["instances"])
        request_id = f"r{self.calls['/predict']}"
        return 200, {"predictions": [0] * rows, "model_version": "7", "request_id": request_id}

    def feedback(self, body: Any) -> tuple[int, Any]:
        empty: list[Any] = []
        answer = {"accepted": len(body["items"]), "duplicates": 0, "conflicts": empty}
        return 200, {**answer, "unknown": empty, "invalid": empty}


@pytest.fixture
def service() -> Iterator[Recorder]:
    with serving(Recorder()) as server:
        yield server


@pytest.fixture
def processed(settings: Settings) -> pd.DataFrame:
    """The held-out rows of the data stage, without the target."""
    prepare(settings)
    split, schema = read_split(settings.data.processed_dir)
    return split.test[schema.names]


def received(service: Recorder) -> pd.DataFrame:
    return pd.DataFrame([row for batch in service.batches for row in batch])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_sends_every_held_out_row_once_by_default(
    settings: Settings, processed: pd.DataFrame, service: Recorder
) -> None:
    sent = simulate(settings, host="127.0.0.1", port=service.server_port, feedback_delay=0)

    assert sent == len(processed)
    assert all(len(batch) <= settings.serving.max_batch_size for batch in service.batches)
    got = received(service)
    assert list(got.columns) == list(processed.columns)  # features only, no target
    assert got["age"].isna().any()  # NaN travels as null
    pd.testing.assert_frame_equal(got, processed.reset_index(drop=True), check_dtype=False)


def test_sends_the_api_key_of_the_settings(
    settings: Settings, processed: pd.DataFrame, service: Recorder
) -> None:
    serving = settings.serving.model_copy(update={"api_key": SecretStr("k3y")})

    with_key = settings.model_copy(update={"serving": serving})
    simulate(with_key, port=service.server_port, rows=3, feedback_share=1, feedback_delay=0)

    assert service.authorizations == {"/predict": ["Bearer k3y"], "/feedback": ["Bearer k3y"]}


def test_more_rows_than_held_out_repeat_them_with_a_warning(
    settings: Settings,
    processed: pd.DataFrame,
    service: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = len(processed) + 10

    assert simulate(settings, port=service.server_port, rows=rows, feedback_delay=0) == rows
    got = received(service)
    assert len(got) == rows
    pd.testing.assert_frame_equal(
        got.iloc[len(processed) :].reset_index(drop=True),
        processed.iloc[:10].reset_index(drop=True),
        check_dtype=False,
    )
    assert "sending them repeatedly" in caplog.text


def test_drift_shifts_numbers_and_categories(
    settings: Settings, processed: pd.DataFrame, service: Recorder
) -> None:
    simulate(settings, port=service.server_port, drift=True, feedback_share=0)

    got = received(service)
    for name in ("age", "score"):
        assert got[name].mean() > processed[name].mean() + processed[name].std()
    assert got["plan"].nunique() == 1
    assert got["plan"].iloc[0] in set(processed["plan"].dropna())
    assert (got["visits"] == got["visits"].round()).all()  # integers stay integers


def test_true_values_of_a_share_of_the_rows_come_later(
    settings: Settings, processed: pd.DataFrame, service: Recorder
) -> None:
    started = time.monotonic()
    simulate(settings, port=service.server_port, feedback_share=0.5, feedback_delay=0.3)

    assert time.monotonic() - started >= 0.3
    items = [item for body in service.bodies("/feedback") for item in body["items"]]
    assert 0.3 * len(processed) < len(items) < 0.7 * len(processed)
    split, schema = read_split(settings.data.processed_dir)
    batch = len(service.batches[0])
    for item in items:
        position = (int(item["request_id"].removeprefix("r")) - 1) * batch + item["index"]
        assert item["actual"] == split.test[schema.target].iloc[position]


@pytest.mark.parametrize(("share", "expected"), [(0.0, 0), (1.0, 1.0)])
def test_feedback_share_bounds(
    settings: Settings, processed: pd.DataFrame, service: Recorder, share: float, expected: float
) -> None:
    simulate(settings, port=service.server_port, rows=30, feedback_share=share, feedback_delay=0)

    items = [item for body in service.bodies("/feedback") for item in body["items"]]
    assert len(items) == expected * 30


def test_a_share_outside_0_to_1_is_refused(settings: Settings, processed: pd.DataFrame) -> None:
    with pytest.raises(SimulationError, match="feedback-share"):
        simulate(settings, rows=5, feedback_share=1.5)


def test_nothing_listening_is_a_clear_error(settings: Settings, processed: pd.DataFrame) -> None:
    with pytest.raises(SimulationError, match="make serve"):
        simulate(settings, port=free_port(), rows=5)


def test_a_refused_batch_shows_the_service_answer(
    settings: Settings, processed: pd.DataFrame, service: Recorder
) -> None:
    service.status = 422

    with pytest.raises(SimulationError, match=r"422.*age"):
        simulate(settings, port=service.server_port, rows=5)


def test_rows_must_be_positive(settings: Settings, processed: pd.DataFrame) -> None:
    with pytest.raises(SimulationError, match="at least 1"):
        simulate(settings, rows=0)


def test_cli_exits_1_without_traceback_when_no_service(
    settings: Settings, processed: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    result = CliRunner().invoke(app, ["simulate", "--port", str(free_port()), "--rows", "5"])

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "start the service with `make serve`" in caplog.text
