import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from skops import io as sio

from conftest import Payload, replace_model
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


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("family", ["hist_gradient_boosting", "random_forest", "linear"])
def test_every_pipeline_of_the_template_loads_with_the_allowlist(
    tmp_path: Path, frames: dict[str, pd.DataFrame], task: str, family: str
) -> None:
    frame = frames[task]
    schema = Schema.infer(frame, "target", task)
    small = {"random_forest": {"n_estimators": 3}, "hist_gradient_boosting": {"max_iter": 3}}
    model = build_pipeline(schema, family, random_state=0, params=small.get(family))
    model.fit(schema.model_input(frame), frame["target"])
    save_bundle(model, tmp_path, name="m", version="1", run_id="r", metrics={}, schema=schema)

    loaded = load_bundle(tmp_path).load_pipeline()

    assert type(loaded[-1]) is type(model[-1])


def test_a_model_file_with_other_types_is_refused_and_runs_no_code(
    bundle_dir: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    replace_model(bundle_dir, Pipeline([("evil", Payload(marker))]))

    with pytest.raises(BundleError) as refused:
        load_bundle(bundle_dir).load_pipeline()

    assert "conftest.Payload" in str(refused.value)
    assert "serving.trusted_types" in str(refused.value)
    assert not marker.exists()
    # The file is a real attack: trusting whatever it lists (as a loader may) runs its code.
    path = bundle_dir / MODEL_FILE
    sio.load(path, trusted=sio.get_untrusted_types(file=path))
    assert marker.read_text() == "code ran"


def test_a_function_is_loaded_only_when_trusted_on_purpose(bundle_dir: Path) -> None:
    replace_model(bundle_dir, Pipeline([("shell", FunctionTransformer(os.system))]))
    name = f"{os.system.__module__}.{os.system.__name__}"

    with pytest.raises(BundleError, match=re.escape(name)):
        load_bundle(bundle_dir).load_pipeline()
    model = load_bundle(bundle_dir, trusted_types=[name]).load_pipeline()

    assert model[0].func is os.system


def test_the_bundle_must_have_the_pinned_sha256(bundle_dir: Path) -> None:
    pinned = hashlib.sha256((bundle_dir / METADATA_FILE).read_bytes()).hexdigest()
    assert load_bundle(bundle_dir, expected_sha256=pinned).version == "1"
    model = load_bundle(bundle_dir).load_pipeline()
    replace_model(bundle_dir, model)  # another file, with a metadata.json that matches it

    with pytest.raises(BundleError) as refused:
        load_bundle(bundle_dir, expected_sha256=pinned)

    assert "serving.model_sha256" in str(refused.value)
    assert "ML_SERVING__MODEL_SHA256" in str(refused.value)
