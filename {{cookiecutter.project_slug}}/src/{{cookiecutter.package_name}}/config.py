"""Typed settings: config.yaml, overridden by ML_* environment variables.

A mistake in the file (a typo'd key, a bad value, broken YAML, no file at all) stops every stage
with one line that says where it is and what would be valid.
"""

from __future__ import annotations

import difflib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from .errors import UserError

Task = Literal["classification", "regression"]
ModelFamily = Literal["hist_gradient_boosting", "random_forest", "linear"]
Runtime = Literal["onnx", "sklearn"]
Rollout = Literal["off", "shadow", "canary"]


# Keys of earlier versions of this project, and where they live now.
MOVED = {
    f"serving.prediction_log_{key}": f"prediction_log.{key}" for key in ("url", "spool", "mode")
}


class ConfigError(UserError):
    """config.yaml is missing, is not valid YAML, or holds a key or value that is not valid."""


class Section(BaseModel):
    """A block of config.yaml: a key it does not know is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class DataSettings(Section):
    source: str = "builtin:breast_cancer"
    target: str = "target"
    query: str | None = None
    csv_sep: str | None = None  # None: detected from the file
    csv_decimal: str | None = None  # None: detected ("," in many European spreadsheet exports)
    csv_encoding: str = "utf-8"  # e.g. cp1252 or latin-1 for a file saved by Excel on Windows
    id_columns: list[str] = Field(default_factory=list)  # never features; logged when sent
    drop_columns: list[str] = Field(default_factory=list)  # never features
    test_size: float = Field(0.2, gt=0, lt=1)
    processed_dir: Path = Path("data/processed")
    reference_rows: int = Field(5000, gt=0)


class ModelSettings(Section):
    family: ModelFamily = "hist_gradient_boosting"
    registered_name: str = "model"
    models_dir: Path = Path("models")
    n_iter: int = Field(8, ge=1)
    cv: int = Field(3, ge=2)
    search_rows: int = Field(20_000, ge=100)
    search_space: dict[ModelFamily, dict[str, list[Any]]] = Field(default_factory=dict)


class MlflowSettings(Section):
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "default"


class ServingSettings(Section):
    runtime: Runtime = "onnx"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1)
    max_batch_size: int = Field(1000, ge=1)
    # Guards of the HTTP service (serving/guards.py) and of model loading (bundle.py).
    api_key: SecretStr | None = None  # set: /predict and other writes need it (Bearer)
    max_concurrency: int = Field(64, ge=1)  # requests in flight per worker; more get 503
    request_timeout: float = Field(30, gt=0)  # seconds until a request is answered 408/503
    model_sha256: str | None = Field(None, pattern="^[0-9a-f]{64}$")  # of models/metadata.json
    trusted_types: list[str] = Field(default_factory=list)  # more types model.skops may hold
    rollout: Rollout = "off"  # the challenger: off | shadow | canary (serving/rollout.py)
    canary_share: float = Field(0.1, ge=0, le=1)

    @field_validator("api_key", "model_sha256", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """An empty variable (e.g. a build argument left out) means "not set"."""
        return None if value in ("", None) else value


class PredictionLogSettings(Section):
    url: str = "sqlite:///predictions.db"  # any SQLAlchemy database URL
    # Rows wait here until the database holds them (prediction_log/spool.py); unset:
    # predictions.db-spool/ beside a SQLite file, else spool/.
    spool: Path | None = None
    mode: Literal["fail_open", "fail_closed"] = "fail_open"  # fail_closed: 503 while degraded

    @field_validator("url")
    @classmethod
    def _a_url(cls, value: str) -> str:
        if "://" not in value:
            example = "sqlite:///predictions.db or postgresql+psycopg://user@host/db"
            raise PydanticCustomError("url", f"a database URL is needed, e.g. {example}")
        return value


class MonitoringSettings(Section):
    window: int = Field(500, ge=1)
    min_rows: int = Field(50, ge=1)
    drift_share: float = Field(0.5, gt=0, le=1)
    reports_dir: Path = Path("reports")
    min_labelled_rows: int = Field(30, ge=1)
    max_metric_drop: float = Field(0.1, ge=0)
    alert_webhook_url: SecretStr | None = None


class OrchestrationSettings(Section):
    training_cron: str = "0 3 * * 1"  # `make schedule`: retrain Mondays at 03:00 (UTC)
    monitoring_cron: str = "0 6 * * *"  # drift and live quality every day at 06:00 (UTC)
    promote: Literal["manual", "auto"] = "manual"  # a winning challenger: alert, or promote it
    min_challenger_rows: int = Field(100, ge=1)  # labelled live rows each model needs first


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ML_", env_nested_delimiter="__", extra="forbid")

    task: Task = "classification"
    random_state: int = 42
    data: DataSettings = DataSettings()
    model: ModelSettings = ModelSettings()
    mlflow: MlflowSettings = MlflowSettings()
    serving: ServingSettings = ServingSettings()
    prediction_log: PredictionLogSettings = PredictionLogSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    orchestration: OrchestrationSettings = OrchestrationSettings()

    @field_validator("mlflow")
    @classmethod
    def _tracking_uri_from_env(cls, value: MlflowSettings) -> MlflowSettings:
        """MLflow's own MLFLOW_TRACKING_URI wins, as every MLflow user expects."""
        if uri := os.environ.get("MLFLOW_TRACKING_URI"):
            return value.model_copy(update={"tracking_uri": uri})
        return value

    @property
    def bundle_dir(self) -> Path:
        return self.model.models_dir

    @property
    def challenger_dir(self) -> Path:
        return self.model.models_dir / "challenger"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls, config_file())


def config_file() -> Path:
    return Path(os.environ.get("CONFIG_FILE", "config.yaml"))


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, read once. Tests call `get_settings.cache_clear()`."""
    path = config_file()
    if not path.is_file():
        raise ConfigError(
            f"No {path} in {Path.cwd()}: run the command from the project folder, or point "
            "CONFIG_FILE at the file."
        )
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: {problem} (check the indentation)") from None
    if content is not None and not isinstance(content, dict):
        raise ConfigError(
            f"{path} must hold `key: value` settings, not a {type(content).__name__}."
        )
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError("; ".join(describe(exc, path))) from None
    except SettingsError as exc:  # a list or a mapping from the environment that is not JSON
        section = str(exc).split('"')[1] if '"' in str(exc) else ""
        names = sorted(k for k in os.environ if k.startswith(f"ML_{section.upper()}__"))
        raise ConfigError(
            f"{', '.join(names) or 'An ML_* variable'}: a list or a mapping set in the "
            """environment must be JSON, e.g. ML_DATA__ID_COLUMNS='["respondent_id"]'."""
        ) from None


def describe(exc: ValidationError, path: Path) -> list[str]:
    """Each problem in a few words, by its dotted key and where it was set (config.yaml or an
    ML_* variable); a typo'd key gets a suggestion."""
    problems = []
    for error in exc.errors(include_url=False):
        parts = [str(part) for part in error["loc"] if part != "[key]"]  # "[key]": a dict's key
        key = ".".join(parts)
        # The variable that set it, or set a list or mapping (as JSON) that holds it:
        variables = ["ML_" + "__".join(parts[:n]).upper() for n in range(len(parts), 0, -1)]
        variable = next((v for v in variables if v in os.environ), variables[0])
        where = f"{variable} (environment)" if variable in os.environ else str(path)
        if key in MOVED:
            new = (
                MOVED[key] if where == str(path) else "ML_" + MOVED[key].replace(".", "__").upper()
            )
            problems.append(f"{where}: `{key}` is now `{MOVED[key]}`: rename it to {new}.")
        elif error["type"] == "extra_forbidden":
            known = _known_keys(error["loc"][:-1])
            match = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
            hint = f"did you mean `{match[0]}`?" if match else f"known keys: {', '.join(known)}."
            problems.append(f"{where}: `{key}` is not a setting: {hint}")
        else:
            value, msg = str(error.get("input"))[:60], error["msg"]
            problems.append(f"{where}: `{key}` = {value!r}: {msg[0].lower()}{msg[1:]}")
    return problems


def _known_keys(parents: tuple[int | str, ...]) -> list[str]:
    model: type[BaseModel] = Settings
    for part in parents:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
