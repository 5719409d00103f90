"""The feature schema: inferred once from the data, read by training, serving and monitoring."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # pandas is imported where a frame is built: serving with ONNX runs without it
    import pandas as pd

Kind = Literal["numeric", "categorical"]
DType = Literal["integer", "float", "string"]
MAX_LISTED_CATEGORIES = 50
MISSING_CATEGORY = "missing"


def as_float32(values: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Numbers as the model reads them: float32, what ONNX computes in. Training sees the same
    values, so a number on a tree's split threshold goes the same way in both."""
    with np.errstate(over="ignore"):  # beyond float32: infinite, which scoring refuses
        return values.astype(np.float32)


def category_text(value: Any) -> str:
    """A category as the model reads it: its text, or MISSING_CATEGORY when it is missing. The
    one place missing categories are filled: training, serving and monitoring all go through it,
    so they can never disagree (and ONNX needs text, not NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING_CATEGORY
    return str(value)


@dataclass(frozen=True)
class Feature:
    name: str
    kind: Kind
    dtype: DType
    nullable: bool
    categories: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class OtherColumn:
    """A column of the data that is not a feature (an ID, a date, free text, a dropped one):
    the API accepts it, the prediction log keeps it, the model never sees it."""

    name: str
    role: str
    reason: str


@dataclass(frozen=True)
class Schema:
    target: str
    task: str
    features: tuple[Feature, ...]
    classes: tuple[str | int, ...] = field(default=())
    others: tuple[OtherColumn, ...] = field(default=())

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "categorical"]

    @classmethod
    def infer(
        cls, df: pd.DataFrame, target: str, task: str, others: tuple[OtherColumn, ...] = ()
    ) -> Schema:
        """Describe every column of `df` except `target` and `others` as a feature; classes
        come from the target."""
        skip = {target, *(other.name for other in others)}
        features = tuple(_infer_feature(df[c]) for c in df.columns if c not in skip)
        classes: tuple[str | int, ...] = ()
        if task == "classification":
            classes = tuple(_plain(v) for v in sorted(df[target].dropna().unique()))
        return cls(target, task, features, classes, others)

    def frame(self, records: list[dict[str, Any]]) -> pd.DataFrame:
        """Rows as the model expects them: schema column order, numbers in one float block
        (missing or text: NaN), categories as text (`category_text`)."""
        import pandas as pd

        df = pd.DataFrame(self.numbers(records), columns=self.numeric)
        for name in self.categorical:
            df[name] = pd.Series([category_text(r.get(name)) for r in records], dtype=object)
        return df[self.names] if self.categorical else df

    def numbers(self, records: list[dict[str, Any]]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """The numeric features of `records`, one row each in `numeric` order; NaN where a value
        is missing or not a number, infinite beyond the float32 range (see `as_float32`)."""
        numeric = self.numeric
        try:
            values = np.array([[r.get(n) for n in numeric] for r in records], dtype=float)
        except (TypeError, ValueError):
            values = np.array([[_number(r.get(n)) for n in numeric] for r in records], dtype=float)
        return as_float32(values.reshape(len(records), len(numeric)))

    def model_input(self, df: pd.DataFrame) -> pd.DataFrame:
        """A data frame's features as `frame` builds them from requests: what training and
        evaluation fit and score on."""
        out = df[self.names].copy()
        if self.numeric:
            numbers = out[self.numeric].to_numpy(dtype=float, na_value=np.nan)
            out[self.numeric] = as_float32(numbers)
        for name in self.categorical:
            column = out[name].astype(object)
            out[name] = column.where(column.notna(), None).map(category_text)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        features = tuple(
            Feature(**{**f, "categories": tuple(f.get("categories", ()))}) for f in data["features"]
        )
        return cls(
            target=data["target"],
            task=data["task"],
            features=features,
            classes=tuple(data.get("classes", ())),
            others=tuple(OtherColumn(**other) for other in data.get("others", ())),
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> Schema:
        return cls.from_dict(json.loads(path.read_text()))


def _infer_feature(column: pd.Series) -> Feature:
    import pandas as pd

    name = str(column.name)
    nullable = bool(column.isna().any())
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.dropna()
        dtype: DType = "integer" if pd.api.types.is_integer_dtype(column) else "float"
        return Feature(
            name=name,
            kind="numeric",
            dtype=dtype,
            nullable=nullable,
            minimum=_finite(values.min()),
            maximum=_finite(values.max()),
        )
    counts = column.dropna().astype(str).value_counts()
    categories = tuple(sorted(counts.index[:MAX_LISTED_CATEGORIES]))
    return Feature(
        name=name, kind="categorical", dtype="string", nullable=nullable, categories=categories
    )


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _plain(value: Any) -> str | int:
    """numpy scalars -> JSON-friendly Python values (class labels are ints or strings)."""
    if isinstance(value, np.integer | int) and not isinstance(value, bool):
        return int(value)
    return str(value)
