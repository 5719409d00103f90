import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package_name }}.bundle import (
    METADATA_FILE,
    MODEL_FILE,
    ONNX_FILE,
    BundleError,
    load_bundle,
    save_bundle,
)
from {{ cookiecutter.package_name }}.pipeline.features import build_pipeline
from {{ cookiecutter.package_name }}.schema import Schema

FAMILY = "{{ cookiecutter.model_family }}"


def test_round_trip_predicts_exactly_like_the_original(
    tmp_path: Path, frame: pd.DataFrame, schema: Schema
) -> None:
    original = build_pipeline(schema, FAMILY, random_state=0)
    original.fit(schema.model_input(frame), frame["target"])
    save_bundle(
        original, tmp_path, name="m", version="3", run_id="r", metrics={"m": 1.0}, schema=schema
    )

    bundle = load_bundle(tmp_path)
    model = bundle.load_pipeline()

    rows = schema.model_input(frame)
    assert bundle.version == "3"
    assert bundle.schema == schema
    if schema.task == "classification":
        np.testing.assert_array_equal(model.predict(rows), original.predict(rows))
        assert bundle.metadata["classes"] == ["no", "yes"]
    else:  # forests add up their trees in parallel threads: the last bits may differ per call
        np.testing.assert_allclose(model.predict(rows), original.predict(rows), rtol=1e-12)
    metadata = json.loads((tmp_path / METADATA_FILE).read_text())
    assert {"name", "version", "run_id", "metrics", "schema", "files"} <= metadata.keys()
    assert list(metadata["files"]) == [MODEL_FILE]


def test_missing_bundle_says_to_train(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="make train"):
        load_bundle(tmp_path)


@pytest.mark.parametrize("file_name", [MODEL_FILE, ONNX_FILE])
def test_tampered_model_file_is_refused(bundle_dir: Path, file_name: str) -> None:
    bundle = load_bundle(bundle_dir)
    with (bundle_dir / file_name).open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="sha256"):
        bundle.path(file_name)


def test_an_export_without_onnx_removes_the_old_onnx_file(
    bundle_dir: Path, frame: pd.DataFrame, schema: Schema
) -> None:
    model = load_bundle(bundle_dir).load_pipeline()
    save_bundle(model, bundle_dir, name="m", version="2", run_id="r", metrics={}, schema=schema)

    bundle = load_bundle(bundle_dir)

    assert not (bundle_dir / ONNX_FILE).exists()
    with pytest.raises(BundleError, match=f"no {ONNX_FILE}"):
        bundle.path(ONNX_FILE)
