"""Traffic simulation against a real HTTP server on a free port (no mocked client)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pandas as pd
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from {{ cookiecutter.package_name }}.cli import app
from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.monitoring.simulate import SimulationError, simulate
from {{ cookiecutter.package_name }}.pipeline.data import prepare
from {{ cookiecutter.package_name }}.pipeline.processed import read_split


class Recorder(ThreadingHTTPServer):
    """Answers POST /predict like the service and keeps every batch it received."""

    status = 200
    batches: list[list[dict[str, Any]]]
    authorizations: list[str | None]


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        instances = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["instances"]
        self.server.batches.append(instances)
        self.server.authorizations.append(self.headers.get("Authorization"))
        body = {"predictions": [0] * len(instances), "model_version": "7"}
        if self.server.status != 200:
            body = {"detail": "instances.0.age: Input should be a valid number"}
        data = json.dumps(body).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


@pytest.fixture
def service() -> Iterator[Recorder]:
    server = Recorder(("127.0.0.1", 0), Handler)
    server.batches = []
    server.authorizations = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


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
    sent = simulate(settings, host="127.0.0.1", port=service.server_port)

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

    simulate(settings.model_copy(update={"serving": serving}), port=service.server_port, rows=3)

    assert service.authorizations == ["Bearer k3y"]


def test_more_rows_than_held_out_repeat_them_with_a_warning(
    settings: Settings,
    processed: pd.DataFrame,
    service: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = len(processed) + 10

    assert simulate(settings, port=service.server_port, rows=rows) == rows
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
    simulate(settings, port=service.server_port, drift=True)

    got = received(service)
    for name in ("age", "score"):
        assert got[name].mean() > processed[name].mean() + processed[name].std()
    assert got["plan"].nunique() == 1
    assert got["plan"].iloc[0] in set(processed["plan"].dropna())
    assert (got["visits"] == got["visits"].round()).all()  # integers stay integers


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
