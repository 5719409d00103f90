"""A peer: the generated model served by LitServe, as a learner who picked it would write it.

It scores with the project's own ONNX runtime (the same model and code path as the generated
service), so the comparison is about the serving framework. It runs in a venv of its own
(litserve + the project's serve extra), never in the project's:

    BENCH_PACKAGE=<pkg> BENCH_BUNDLE_DIR=<project>/models python litserve_app.py --port 8000
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path
from typing import Any

import litserve as ls


class ModelAPI(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device: str) -> None:
        package = os.environ["BENCH_PACKAGE"]
        bundle_module = importlib.import_module(f"{package}.bundle")
        runtimes = importlib.import_module(f"{package}.runtimes")
        self.bundle = bundle_module.load_bundle(Path(os.environ["BENCH_BUNDLE_DIR"]))
        self.runtime = runtimes.load_runtime("onnx", self.bundle)

    # No type hint on `request`: LitServe builds the endpoint from it (a dict hint becomes a
    # query parameter); without one it passes the parsed JSON body.
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return request["instances"]

    def predict(self, rows: list[dict[str, Any]]) -> Any:
        return self.runtime.score(rows)

    def encode_response(self, output: Any) -> dict[str, Any]:
        predictions, probabilities = output
        answer = {"predictions": predictions, "model_version": self.bundle.version}
        return answer if probabilities is None else {**answer, "probabilities": probabilities}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ls.LitServer(ModelAPI(), accelerator="cpu", workers_per_device=1)
    server.run(
        host="127.0.0.1", port=args.port, num_api_servers=1, generate_client_file=False,
        log_level="warning",
    )  # fmt: skip


if __name__ == "__main__":
    main()
