import json
from pathlib import Path

import pandas as pd
import pytest

from {{ cookiecutter.package_name }}.bundle import METADATA_FILE, MODEL_FILE, BundleError, load_bundle
from {{ cookiecutter.package_name }}.schema import Schema


def test_round_trip_predicts_like_the_original(
    bundle_dir: Path, frame: pd.DataFrame, schema: Schema
) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.version == "1"
    assert bundle.schema == schema
    assert list(bundle.model.predict(frame[schema.names].head(20))) == list(
        bundle.model.predict(schema.frame(frame[schema.names].head(20).to_dict("records")))
    )
    metadata = json.loads((bundle_dir / METADATA_FILE).read_text())
    assert {"name", "version", "run_id", "metrics", "schema", "sha256"} <= metadata.keys()


def test_missing_bundle_says_to_train(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="make train"):
        load_bundle(tmp_path)


def test_tampered_model_file_is_refused(bundle_dir: Path) -> None:
    with (bundle_dir / MODEL_FILE).open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(bundle_dir)
