"""Shared fixtures: tiny synthetic data, settings pointed at tmp_path, a trained bundle."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from skops import io as sio
from threadpoolctl import threadpool_limits

from {{ cookiecutter.package_name }}.bundle import METADATA_FILE, MODEL_FILE, save_bundle, sha256
from {{ cookiecutter.package_name }}.config import Settings, get_settings
from {{ cookiecutter.package_name }}.pipeline.features import build_pipeline
from {{ cookiecutter.package_name }}.pipeline.onnx_export import export_onnx
from {{ cookiecutter.package_name }}.prediction_log.reader import Reader
from {{ cookiecutter.package_name }}.schema import Schema
from {{ cookiecutter.package_name }}.serving.app import create_app

TASK = "{{ cookiecutter.task }}"
FAMILY = "{{ cookiecutter.model_family }}"
Route = Callable[[Any], tuple[int, Any]]  # request body -> (status, JSON answer)


class StubServer(ThreadingHTTPServer):
    """A real HTTP server on 127.0.0.1 and a free port for code that calls out (the service
    seen from a client, a chat webhook): each path answers with its route; requests are kept."""

    def __init__(self, routes: dict[str, Route] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.routes: dict[str, Route] = dict(routes or {})
        self.calls: dict[str, int] = {}
        self.received: list[tuple[str, Any, dict[str, str]]] = []  # path, JSON body, headers

    def bodies(self, path: str) -> list[Any]:
        return [body for where, body, _ in self.received if where == path]


class _StubHandler(BaseHTTPRequestHandler):
    server: StubServer

    def do_GET(self) -> None:
        self._answer(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self._answer(json.loads(self.rfile.read(length)))

    def _answer(self, body: Any) -> None:
        self.server.calls[self.path] = self.server.calls.get(self.path, 0) + 1
        self.server.received.append((self.path, body, dict(self.headers)))
        route = self.server.routes.get(self.path, lambda _: (404, {"detail": "Not Found"}))
        status, payload = route(body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows the test's own log."""


@contextmanager
def serving(server: StubServer) -> Iterator[StubServer]:
    """Serve from a thread until the block ends."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def make_frame(rows: int = 240, seed: int = 0, task: str = TASK) -> pd.DataFrame:
    """Messy, realistic columns: floats with NaN, an integer code, a string category with NaN."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "age": rng.normal(50, 10, rows).round(1),
            "visits": rng.integers(0, 6, rows),
            "plan": rng.choice(["basic", "plus", "pro"], rows),
            "score": rng.normal(0, 1, rows),
        }
    )
    signal = df["score"] + (df["plan"] == "pro") * 1.5 + df["visits"] * 0.2
    if task == "classification":
        df["target"] = np.where(signal > signal.median(), "yes", "no")
    else:
        df["target"] = (signal * 10 + rng.normal(0, 1, rows)).round(3)
    df.loc[::11, "age"] = np.nan
    df.loc[::13, "plan"] = None
    return df


def make_churn_csv(path: Path, rows: int = 300, seed: int = 0) -> Path:
    """A churn export as learners bring it: an ID, a date, amounts with blanks, free text,
    string categories and a Yes/No target."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 72, rows)
    monthly = rng.uniform(20, 110, rows).round(2)
    plan = rng.choice(["Month-to-month", "One year", "Two year"], rows)
    churn = (plan == "Month-to-month") & (rng.uniform(size=rows) < 0.6) | (tenure < 6)
    total = (tenure * monthly).round(2).astype(str)
    total[::37] = " "  # blank amounts, as in a spreadsheet export
    words = np.array(["slow", "support", "price", "happy", "moving", "wifi", "bill", "late"])
    ids = range(rows)
    df = pd.DataFrame(
        {
            "customerID": [f"{i:04d}-{chr(65 + i % 26)}{chr(65 + i // 26 % 26)}" for i in ids],
            "signup_date": pd.date_range("2020-01-01", periods=rows, freq="3D").strftime("%F"),
            "plan": plan,
            "tenure": tenure,
            "MonthlyCharges": monthly,
            "TotalCharges": total,
            "notes": [" ".join(rng.choice(words, 4)) + f" #{i}" for i in range(rows)],
            "Churn": np.where(churn, "Yes", "No"),
        }
    )
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def churn_settings(settings: Settings, tmp_path: Path) -> Settings:
    """The settings fixture pointed at the churn CSV, a classification task."""
    csv = make_churn_csv(tmp_path / "churn.csv")
    data = settings.data.model_copy(update={"source": str(csv), "target": "Churn"})
    return settings.model_copy(update={"task": "classification", "data": data})


@pytest.fixture(scope="session", autouse=True)
def _one_thread_per_test_process() -> Iterator[None]:
    """Tiny data gains nothing from OpenMP threads, which crawl when the CPUs are busy."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture
def frame() -> pd.DataFrame:
    """Synthetic data for this project's task."""
    return make_frame()


@pytest.fixture
def clf_frame() -> pd.DataFrame:
    """Synthetic data with a string class target, whatever this project's task."""
    return make_frame(task="classification")


@pytest.fixture
def frames() -> dict[str, pd.DataFrame]:
    """Synthetic data for each task."""
    return {task: make_frame(task=task) for task in ("classification", "regression")}


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings whose every path and URL lives in tmp_path, also written to ./config.yaml."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    csv = tmp_path / "raw.csv"
    make_frame().to_csv(csv, index=False)
    value = Settings.model_validate(
        {
            "task": TASK,
            "data": {"source": str(csv), "target": "target", "processed_dir": tmp_path / "data"},
            "model": {
                "family": FAMILY,
                "registered_name": "test-model",
                "models_dir": tmp_path / "models",
                "n_iter": 2,
                "cv": 2,
                "search_space": {
                    "hist_gradient_boosting": {"max_leaf_nodes": [7, 15]},
                    "random_forest": {"n_estimators": [20, 40], "max_depth": [4, 8]},
                    "linear": {"C" if TASK == "classification" else "alpha": [0.1, 1.0]},
                },
            },
            "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "t"},
            "serving": {"max_batch_size": 50},
            "prediction_log": {"url": f"sqlite:///{tmp_path / 'predictions.db'}"},
            "monitoring": {"reports_dir": tmp_path / "reports", "min_rows": 20, "window": 200},
        }
    )
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(value.model_dump(mode="json")))
    get_settings.cache_clear()
    yield value
    get_settings.cache_clear()


@pytest.fixture
def schema(frame: pd.DataFrame) -> Schema:
    return Schema.infer(frame, "target", TASK)


@pytest.fixture
def bundle_dir(settings: Settings, frame: pd.DataFrame, schema: Schema) -> Path:
    """A real bundle (scikit-learn pipeline and its ONNX export) of a pipeline fitted on the
    synthetic frame, where settings expect it."""
    return save_test_bundle(settings.bundle_dir, frame, schema, version="1")


@pytest.fixture
def challenger_dir(
    settings: Settings, bundle_dir: Path, frame: pd.DataFrame, schema: Schema
) -> Path:
    """A second bundle, version 2, in models/challenger/: fitted on the targets in reverse
    order, so it disagrees with the champion on many rows."""
    shuffled = frame.assign(target=frame["target"].to_numpy()[::-1])
    return save_test_bundle(settings.challenger_dir, shuffled, schema, version="2")


def save_test_bundle(directory: Path, frame: pd.DataFrame, schema: Schema, version: str) -> Path:
    model = build_pipeline(schema, FAMILY, random_state=0)
    model.fit(schema.model_input(frame), frame["target"])
    onnx_model, _ = export_onnx(model, schema, make_frame(seed=1))
    save_bundle(
        model,
        directory,
        name="test-model",
        version=version,
        run_id=f"run-{version}",
        metrics={"holdout": 1.0},
        schema=schema,
        onnx_model=onnx_model,
    )
    return directory


Traffic = Callable[..., pd.DataFrame]


@pytest.fixture
def labelled_traffic(settings: Settings, bundle_dir: Path, frame: pd.DataFrame) -> Traffic:
    """`labelled_traffic(rows, labelled, wrong=False)`: score `rows` rows of the frame, send the
    true value of the first `labelled` of them (a wrong one when asked), and return those
    labelled rows as `prediction` and `actual` columns."""

    def send(rows: int, labelled: int, wrong: bool = False) -> pd.DataFrame:
        instances = json.loads(frame.drop(columns="target").head(rows).to_json(orient="records"))
        with TestClient(create_app(settings)) as client:
            answers = []
            for start in range(0, rows, settings.serving.max_batch_size):
                batch = instances[start : start + settings.serving.max_batch_size]
                answers.append(client.post("/predict", json={"instances": batch}).json())
            _wait_for_log(settings, rows)
            items = [
                {"request_id": answer["request_id"], "index": i, "prediction": prediction}
                for answer in answers
                for i, prediction in enumerate(answer["predictions"])
            ][:labelled]
            actual = [
                _wrong(item["prediction"], frame) if wrong else value
                for item, value in zip(items, frame["target"], strict=False)
            ]
            body = [
                {"request_id": item["request_id"], "index": item["index"], "actual": value}
                for item, value in zip(items, actual, strict=True)
            ]
            answer = client.post("/feedback", json={"items": body}).json()
            assert answer["accepted"] == labelled, answer
        predictions = [item["prediction"] for item in items]
        return pd.DataFrame({"prediction": predictions, "actual": actual})

    return send


def _wrong(prediction: Any, frame: pd.DataFrame) -> Any:
    """A true value far from the prediction: the other class, or 100 more."""
    if isinstance(prediction, str):
        return next(c for c in sorted(frame["target"].unique()) if c != prediction)
    return prediction + 100.0


def _wait_for_log(settings: Settings, rows: int) -> None:
    """The service writes its log off the request path."""
    store = Reader(settings.prediction_log.url)
    deadline = time.monotonic() + 10
    while store.count() < rows:
        assert time.monotonic() < deadline, "the rows never reached the prediction log"
        time.sleep(0.02)


class Payload:
    """What an attacker would put in a model file: code that runs when the object is built."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __getstate__(self) -> dict[str, Any]:
        return {"marker": self.marker}

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["marker"]).write_text("code ran")


def replace_model(bundle_dir: Path, model: Any) -> None:
    """Swap model.skops as someone who can write models/ would: metadata.json updated too."""
    sio.dump(model, bundle_dir / MODEL_FILE)
    metadata = json.loads((bundle_dir / METADATA_FILE).read_text())
    metadata["files"][MODEL_FILE] = sha256(bundle_dir / MODEL_FILE)
    (bundle_dir / METADATA_FILE).write_text(json.dumps(metadata))
