import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package_name }}.bundle import (
    METADATA_FILE,
    MODEL_FILE,
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
    original.fit(frame[schema.names], frame["target"])
    save_bundle(
        original, tmp_path, name="m", version="3", run_id="r", metrics={"m": 1.0}, schema=schema
    )

    bundle = load_bundle(tmp_path)

    rows = frame[schema.names]
    assert bundle.version == "3"
    assert bundle.schema == schema
    if schema.task == "classification":
        np.testing.assert_array_equal(bundle.model.predict(rows), original.predict(rows))
    else:  # forests add up their trees in parallel threads: the last bits may differ per call
        np.testing.assert_allclose(bundle.model.predict(rows), original.predict(rows), rtol=1e-12)
    metadata = json.loads((tmp_path / METADATA_FILE).read_text())
    assert {"name", "version", "run_id", "metrics", "schema", "sha256"} <= metadata.keys()


def test_missing_bundle_says_to_train(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="make train"):
        load_bundle(tmp_path)


def test_tampered_model_file_is_refused(bundle_dir: Path) -> None:
    with (bundle_dir / MODEL_FILE).open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(bundle_dir)
