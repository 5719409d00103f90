"""The "Results" section of README.md, rewritten by `make train` whenever a new model serves.

Only the text between the two markers is replaced, so the rest of the README is the learner's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from sklearn.inspection import permutation_importance
from sklearn.pipeline import Pipeline

from ..processed import Split
from ..schema import Schema

log = logging.getLogger(__name__)
START = "<!-- results:start -->"
END = "<!-- results:end -->"
IMPORTANCE_ROWS = 2000  # permutation importance on at most this many test rows
TOP_FEATURES = 5


def main_features(
    model: Pipeline, split: Split, schema: Schema, scoring: str, seed: int
) -> list[tuple[str, float]]:
    """The features whose shuffling hurts the test score most (permutation importance)."""
    test = split.test.sample(n=min(IMPORTANCE_ROWS, len(split.test)), random_state=seed)
    result = permutation_importance(
        model,
        schema.model_input(test),
        test[schema.target],
        scoring=scoring,
        n_repeats=5,
        random_state=seed,
    )
    ranked = sorted(zip(schema.names, result.importances_mean, strict=True), key=lambda x: -x[1])
    return [(name, float(score)) for name, score in ranked[:TOP_FEATURES]]


def results_section(
    *,
    source: str,
    family: str,
    version: str,
    schema: Schema,
    split: Split,
    metrics: dict[str, float],
    trivial: dict[str, float],
    features: list[tuple[str, float]],
    plots: list[str],
    models_dir: Path,
) -> str:
    """Markdown between the markers: the problem, the data, the model against a trivial one."""
    lines = []
    if source.startswith("builtin:"):
        lines += [
            f"> **This project still runs on the demo dataset** (`{source}`). Point",
            "> `data.source` and `data.target` in `config.yaml` at your own data (see",
            "> [Use your own data](#use-your-own-data)), then `make train` rewrites this section.",
            "",
        ]
    lines += [
        f"- **Problem**: {schema.task} of `{schema.target}` ({_target(split, schema)})",
        f"- **Data**: `{source}`, {len(split.train) + len(split.test)} rows "
        f"({len(split.train)} to train, {len(split.test)} held out), "
        f"{len(schema.names)} features",
        f"- **Model**: {family.replace('_', ' ')}, registered version {version}",
        "",
        "| test metric | this model | trivial model (ignores the features) |",
        "|---|---|---|",
        *(f"| {k} | {v:.4f} | {trivial.get(k, float('nan')):.4f} |" for k, v in metrics.items()),
        "",
        "Main features (how much the test score drops when the feature is shuffled): "
        + ", ".join(f"`{name}` {score:.3f}" for name, score in features)
        + ".",
        "",
        *(f"![{Path(p).stem}]({models_dir.as_posix()}/{p})" for p in plots),
        "",
        f"How it was chosen, all candidates and limitations: [model card]"
        f"({models_dir.as_posix()}/model_card.md).",
    ]
    return "\n".join(lines)


def write_results(readme: Path, section: str) -> bool:
    """Replace the text between the markers; False (and a log line) when there are none."""
    if not readme.is_file():
        return False
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        log.info("No %s ... %s markers in %s: results not written there.", START, END, readme)
        return False
    readme.write_text(text[: start + len(START)] + "\n" + section + "\n" + text[end:])
    return True


def _target(split: Split, schema: Schema) -> str:
    target: pd.Series = split.train[schema.target]
    if schema.task == "classification":
        shares = target.value_counts(normalize=True)
        return ", ".join(f"{label} {share:.0%}" for label, share in shares.items())
    return f"mean {target.mean():.3g}, from {target.min():.3g} to {target.max():.3g}"
