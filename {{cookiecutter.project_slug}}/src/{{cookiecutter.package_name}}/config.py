"""Typed settings: config.yaml, overridden by ML_* environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

Task = Literal["classification", "regression"]
ModelFamily = Literal["hist_gradient_boosting", "random_forest", "linear"]
Runtime = Literal["onnx", "sklearn"]


class DataSettings(BaseModel):
    source: str = "builtin:breast_cancer"
    target: str = "target"
    query: str | None = None
    test_size: float = Field(0.2, gt=0, lt=1)
    processed_dir: Path = Path("data/processed")
    reference_rows: int = Field(5000, gt=0)


class ModelSettings(BaseModel):
    family: ModelFamily = "hist_gradient_boosting"
    registered_name: str = "model"
    models_dir: Path = Path("models")
    n_iter: int = Field(8, ge=1)
    cv: int = Field(3, ge=2)
    search_rows: int = Field(20_000, ge=100)
    search_space: dict[str, dict[str, list[Any]]] = Field(default_factory=dict)


class MlflowSettings(BaseModel):
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "default"


class ServingSettings(BaseModel):
    runtime: Runtime = "onnx"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1)
    max_batch_size: int = Field(1000, ge=1)
    prediction_log_url: str = "sqlite:///predictions.db"


class MonitoringSettings(BaseModel):
    window: int = Field(500, ge=1)
    min_rows: int = Field(50, ge=1)
    drift_share: float = Field(0.5, gt=0, le=1)
    reports_dir: Path = Path("reports")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ML_", env_nested_delimiter="__", extra="forbid")

    task: Task = "classification"
    random_state: int = 42
    data: DataSettings = DataSettings()
    model: ModelSettings = ModelSettings()
    mlflow: MlflowSettings = MlflowSettings()
    serving: ServingSettings = ServingSettings()
    monitoring: MonitoringSettings = MonitoringSettings()

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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = Path(os.environ.get("CONFIG_FILE", "config.yaml"))
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file)


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, read once. Tests call `get_settings.cache_clear()`."""
    return Settings()
