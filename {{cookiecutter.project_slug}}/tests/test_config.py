from pathlib import Path

import pytest
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.config import Settings, get_settings


def test_reads_config_yaml_of_the_working_directory(settings: Settings) -> None:
    assert get_settings().data.source == settings.data.source
    assert get_settings().model.family == settings.model.family


def test_environment_overrides_yaml(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_SERVING__MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    get_settings.cache_clear()
    assert get_settings().serving.max_batch_size == 7
    assert get_settings().mlflow.tracking_uri == "sqlite:///elsewhere.db"


def test_config_file_can_be_chosen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("task: regression\ndata:\n  source: builtin:diabetes\n")
    monkeypatch.setenv("CONFIG_FILE", str(other))
    assert Settings().data.source == "builtin:diabetes"


def test_unknown_keys_are_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.yaml").write_text("taks: classification\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match="taks"):
        Settings()


def test_nothing_is_created_by_loading_settings(settings: Settings) -> None:
    assert not settings.data.processed_dir.exists()
    assert not settings.bundle_dir.exists()
