from pathlib import Path

import pytest
from typer.testing import CliRunner

from {{ cookiecutter.package_name }}.cli import app
from {{ cookiecutter.package_name }}.config import Settings, get_settings
from {{ cookiecutter.package_name }}.processed import schema_path

runner = CliRunner()


def test_help_lists_every_stage() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ["data", "train", "evaluate", "serve", "demo"]:
        assert command in result.output


def test_data_stage_runs_from_config_yaml(settings: Settings) -> None:
    result = runner.invoke(app, ["data"])
    assert result.exit_code == 0, result.output
    assert schema_path(settings.data.processed_dir).is_file()


def test_user_errors_are_one_line_and_exit_1(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ML_DATA__SOURCE", "missing.csv")
    get_settings.cache_clear()
    result = runner.invoke(app, ["data"])
    assert result.exit_code == 1
    assert "missing.csv does not exist" in caplog.text
    assert "Traceback" not in result.output


def test_invalid_config_is_reported_not_raised(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ML_TASK", "clustering")
    get_settings.cache_clear()
    result = runner.invoke(app, ["evaluate"])
    assert result.exit_code == 1
    assert "ML_TASK (environment): `task` = 'clustering'" in caplog.text


def test_a_yaml_syntax_error_is_one_line_without_traceback(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    (Path.cwd() / "config.yaml").write_text("data:\n  source: a\n target: b\n")
    get_settings.cache_clear()
    result = runner.invoke(app, ["data"])
    assert result.exit_code == 1
    [error] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert error.getMessage().startswith("config.yaml, line 3, column 2: ")
    assert "Traceback" not in result.output


def test_evaluate_without_a_model_says_to_train(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    assert runner.invoke(app, ["data"]).exit_code == 0
    result = runner.invoke(app, ["evaluate"])
    assert result.exit_code == 1
    assert "make train" in caplog.text
