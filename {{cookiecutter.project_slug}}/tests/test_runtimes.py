"""Both runtimes on the same bundle: same answers; the ONNX one without scikit-learn or pandas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from {{ cookiecutter.package_name }}.bundle import (
    METADATA_FILE,
    ONNX_FILE,
    BundleError,
    load_bundle,
    save_bundle,
    sha256,
)
from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.runtimes import (
    NotScorableError,
    OnnxRuntime,
    SklearnRuntime,
    load_runtime,
)
from {{ cookiecutter.package_name }}.schema import Schema

PACKAGE = "{{ cookiecutter.package_name }}"
SRC = Path(__file__).resolve().parents[1] / "src"


def request_rows(frame: pd.DataFrame, schema: Schema) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(frame[schema.names].to_json(orient="records"))
    return rows


def test_both_runtimes_answer_the_same(
    bundle_dir: Path, frame: pd.DataFrame, schema: Schema
) -> None:
    bundle = load_bundle(bundle_dir)
    rows = request_rows(frame, schema)  # with missing numbers and categories

    onnx = load_runtime("onnx", bundle)
    sklearn = load_runtime("sklearn", bundle)
    (labels, proba), (expected_labels, expected_proba) = onnx.score(rows), sklearn.score(rows)

    assert isinstance(onnx, OnnxRuntime) and isinstance(sklearn, SklearnRuntime)
    if schema.task == "classification":
        assert labels == expected_labels
        assert proba is not None and expected_proba is not None
        for mine, theirs in zip(proba, expected_proba, strict=True):
            assert mine.keys() == theirs.keys()
            assert mine == pytest.approx(theirs, abs=1e-4)
    else:
        assert proba is None
        assert labels == pytest.approx(expected_labels, rel=1e-4)


def test_serving_with_onnx_imports_no_sklearn_or_pandas(
    settings: Settings, bundle_dir: Path
) -> None:
    """The serve extra has neither: the ONNX path must not import them, not even lazily."""
    code = (
        "import sys\n"
        f"from {PACKAGE}.config import get_settings\n"
        f"from {PACKAGE}.serving.app import create_app\n"
        f"from {PACKAGE}.serving.predictor import Predictor\n"
        "predictor = Predictor.load(get_settings())\n"
        "row = {f.name: None for f in predictor.champion.bundle.schema.features}\n"
        "predictor.predict([row])\n"
        "predictor.prediction_log.close()\n"
        "heavy = {'sklearn', 'scipy', 'pandas', 'skops', 'mlflow'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}  # the package, as pytest's pythonpath gives it
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_onnx_without_model_onnx_says_what_to_do(bundle_dir: Path, schema: Schema) -> None:
    model = load_bundle(bundle_dir).load_pipeline()
    save_bundle(model, bundle_dir, name="m", version="2", run_id="r", metrics={}, schema=schema)

    with pytest.raises(BundleError, match=r"serving\.runtime: sklearn"):
        load_runtime("onnx", load_bundle(bundle_dir))


def test_an_onnx_model_with_a_custom_operator_is_refused(bundle_dir: Path) -> None:
    """onnxruntime runs only operators it knows; none from a custom library is registered."""
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info
    node = helper.make_node("Payload", ["x"], ["y"], domain="example.custom")
    graph = helper.make_graph(
        [node], "g", [value("x", TensorProto.FLOAT, [1])], [value("y", TensorProto.FLOAT, [1])]
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("example.custom", 1)]
    (bundle_dir / ONNX_FILE).write_bytes(
        helper.make_model(graph, opset_imports=opsets).SerializeToString()
    )
    metadata = json.loads((bundle_dir / METADATA_FILE).read_text())
    metadata["files"][ONNX_FILE] = sha256(bundle_dir / ONNX_FILE)
    (bundle_dir / METADATA_FILE).write_text(json.dumps(metadata))

    with pytest.raises(BundleError, match="standard ONNX operators") as refused:
        load_runtime("onnx", load_bundle(bundle_dir))

    assert "example.custom:Payload" in str(refused.value)


def test_a_number_beyond_float32_cannot_be_scored_by_onnx(
    bundle_dir: Path, schema: Schema, frame: pd.DataFrame
) -> None:
    row = request_rows(frame.dropna(), schema)[0]
    runtime = load_runtime("onnx", load_bundle(bundle_dir))

    with pytest.raises(NotScorableError, match="float32"):
        runtime.score([{**row, schema.numeric[0]: 1e300}])


def test_what_sklearn_refuses_is_not_scorable(
    bundle_dir: Path, schema: Schema, frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = load_runtime("sklearn", load_bundle(bundle_dir))
    assert isinstance(runtime, SklearnRuntime)

    def refuse(frame: pd.DataFrame) -> Any:
        raise ValueError("Input X contains infinity")

    monkeypatch.setattr(runtime.model, "predict", refuse)
    monkeypatch.setattr(runtime.model, "predict_proba", refuse, raising=False)

    with pytest.raises(NotScorableError, match="infinity"):
        runtime.score(request_rows(frame.head(1), schema))
