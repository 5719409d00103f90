from pathlib import Path

import pytest
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.config import ConfigError, Settings, get_settings


def test_reads_config_yaml_of_the_working_directory(settings: Settings) -> None:
    assert get_settings().data.source == settings.data.source
    assert get_settings().model.family == settings.model.family


def test_environment_overrides_yaml(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_SERVING__MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    get_settings.cache_clear()
    assert get_settings().serving.max_batch_size == 7
    assert get_settings().mlflow.tracking_uri == "sqlite:///elsewhere.db"


@pytest.mark.usefixtures("settings")
def test_the_api_key_and_model_hash_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    digest = "ab" * 32
    monkeypatch.setenv("ML_SERVING__API_KEY", "k3y")
    monkeypatch.setenv("ML_SERVING__MODEL_SHA256", digest)
    get_settings.cache_clear()

    serving = get_settings().serving

    assert serving.api_key is not None and serving.api_key.get_secret_value() == "k3y"
    assert "k3y" not in repr(serving)
    assert serving.model_sha256 == digest


@pytest.mark.usefixtures("settings")
def test_empty_variables_leave_them_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Docker build argument left out becomes an empty variable."""
    monkeypatch.setenv("ML_SERVING__API_KEY", "")
    monkeypatch.setenv("ML_SERVING__MODEL_SHA256", "")
    get_settings.cache_clear()

    assert get_settings().serving.api_key is None
    assert get_settings().serving.model_sha256 is None


@pytest.mark.usefixtures("settings")
def test_a_model_hash_that_is_not_a_sha256_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_SERVING__MODEL_SHA256", "models/metadata.json")
    get_settings.cache_clear()

    with pytest.raises(ConfigError, match=r"serving\.model_sha256"):
        get_settings()


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


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "data:\n  tset_size: 0.5\n",
            "`data.tset_size` is not a setting: did you mean `test_",
        ),
        ("taks: regression\n", "`taks` is not a setting: did you mean `task`?"),
        ("task: clustering\n", "`task` = 'clustering': input should be 'classification' or"),
        ("data:\n  test_size: 2\n", "`data.test_size` = '2': input should be less than 1"),
        ("data:\n  source: a\n target: b\n", "config.yaml, line 3, column 2: "),
        ("- task\n", "config.yaml must hold `key: value` settings, not a list."),
    ],
)
def test_config_mistakes_are_one_line_that_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, message: str
) -> None:
    (tmp_path / "config.yaml").write_text(content)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    with pytest.raises(ConfigError) as raised:
        get_settings()
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_missing_config_yaml_is_an_error_not_the_demo_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    with pytest.raises(
        ConfigError, match=r"No config.yaml in .*: run the command from the project"
    ):
        get_settings()


def test_nothing_is_created_by_loading_settings(settings: Settings) -> None:
    assert not settings.data.processed_dir.exists()
    assert not settings.bundle_dir.exists()


@pytest.mark.usefixtures("settings")
def test_a_list_from_the_environment_that_is_not_json_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ML_DATA__ID_COLUMNS", "respondent_id")
    get_settings.cache_clear()

    with pytest.raises(ConfigError) as raised:
        get_settings()

    assert str(raised.value).startswith("ML_DATA__ID_COLUMNS: ")
    assert """'["respondent_id"]'""" in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.usefixtures("settings")
def test_a_bad_value_says_whether_it_came_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ML_SERVING__PORT", "abc")
    monkeypatch.setenv("ML_SERVING__PREDICTION_LOG_URL", "sqlite:///p.db")
    get_settings.cache_clear()

    with pytest.raises(ConfigError) as raised:
        get_settings()

    message = str(raised.value)
    assert "ML_SERVING__PORT (environment): `serving.port` = 'abc'" in message
    assert "`serving.prediction_log_url` is now `prediction_log.url`" in message
    assert "rename it to ML_PREDICTION_LOG__URL" in message
    assert "config.yaml" not in message


@pytest.mark.usefixtures("settings")
def test_a_prediction_log_url_that_is_not_a_url_is_refused_at_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ML_PREDICTION_LOG__URL", "predictions.db")
    get_settings.cache_clear()

    with pytest.raises(ConfigError) as raised:
        get_settings()

    assert "ML_PREDICTION_LOG__URL (environment): `prediction_log.url`" in str(raised.value)
    assert "a database URL is needed, e.g. sqlite:///" in str(raised.value)


@pytest.mark.usefixtures("settings")
def test_a_bad_item_of_a_mapping_set_in_the_environment_names_that_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ML_MODEL__SEARCH_SPACE", '{"hist_gradient_boost": {"max_depth": [3]}}')
    get_settings.cache_clear()

    with pytest.raises(ConfigError) as raised:
        get_settings()

    message = str(raised.value)
    assert message.startswith("ML_MODEL__SEARCH_SPACE (environment): `model.search_space.hist_")
    assert "'hist_gradient_boosting', 'random_forest' or 'linear'" in message
