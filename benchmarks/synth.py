"""Synthetic data shaped like the builtin breast_cancer set, at any number of rows.

Rows are drawn with replacement from the 569 builtin rows and every feature is perturbed with
Gaussian noise (5% of the column's standard deviation, clipped at zero like the originals), so
the 30 numeric columns and the binary target keep their distributions and relationships.
Runs with the generated project's Python (it needs pandas, scikit-learn and pyarrow):

    .venv/bin/python benchmarks/synth.py 100000 data/synthetic-100000.parquet
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer

NOISE = 0.05


def synthesize(rows: int, seed: int = 0) -> pd.DataFrame:
    base = load_breast_cancer(as_frame=True).frame
    features = base.columns.drop("target")
    rng = np.random.default_rng(seed)
    picked = base.iloc[rng.integers(0, len(base), size=rows)].reset_index(drop=True)
    values = picked[features].to_numpy()
    noise = rng.normal(0.0, NOISE, size=values.shape) * base[features].std().to_numpy()
    frame = pd.DataFrame(np.clip(values + noise, 0.0, None), columns=features)
    frame["target"] = picked["target"].to_numpy()
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=int)
    parser.add_argument("output", type=Path, help=".parquet or .csv file to write")
    args = parser.parse_args()
    frame = synthesize(args.rows)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.output.suffix == ".csv":
        frame.to_csv(args.output, index=False)
    else:
        frame.to_parquet(args.output, index=False)


if __name__ == "__main__":
    main()
