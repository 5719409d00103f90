"""What `make data` leaves in `data.processed_dir`, and how the later stages read it back.

train.parquet, test.parquet   the split (the test rows are only ever used for reporting)
reference.parquet             a sample of the training rows: the monitoring reference
schema.json                   the feature schema that training, serving and monitoring read
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import UserError
from .schema import Schema

SCHEMA_FILE = "schema.json"


class NoProcessedDataError(UserError):
    """A stage needs the output of `make data`, which is not there."""


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    test: pd.DataFrame


def schema_path(directory: Path) -> Path:
    return directory / SCHEMA_FILE


def write_processed(directory: Path, split: Split, reference: pd.DataFrame, schema: Schema) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, frame in {"train": split.train, "test": split.test, "reference": reference}.items():
        frame.to_parquet(directory / f"{name}.parquet", index=False)
    schema.save(schema_path(directory))


def read_split(directory: Path) -> tuple[Split, Schema]:
    """The train and test rows and the schema."""
    train, test = _read(directory, "train.parquet", "test.parquet")
    return Split(train, test), Schema.load(schema_path(directory))


def read_reference(directory: Path) -> tuple[pd.DataFrame, Schema]:
    """The monitoring reference rows and the schema."""
    (reference,) = _read(directory, "reference.parquet")
    return reference, Schema.load(schema_path(directory))


def _read(directory: Path, *names: str) -> list[pd.DataFrame]:
    paths = [directory / name for name in names]
    if not all(path.is_file() for path in [*paths, schema_path(directory)]):
        raise NoProcessedDataError(f"No processed data in {directory}/: run `make data` first.")
    return [pd.read_parquet(path) for path in paths]
