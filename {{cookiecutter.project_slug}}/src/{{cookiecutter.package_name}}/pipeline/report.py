"""What a new champion is, in words: its model card, and the "Results" section of README.md.

The Results section is the text between two markers in README.md, rewritten by `make train`
whenever a new model serves: the rest of the README is the learner's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from sklearn.inspection import permutation_importance

from ..config import Settings
from ..errors import mask_url
from ..metrics import HIGHER_IS_BETTER
from .evaluate import clearly_better
from .onnx_export import Parity
from .registry import Promotion, Training

log = logging.getLogger(__name__)
START, END = "<!-- results:start -->", "<!-- results:end -->"
IMPORTANCE_ROWS = 2000  # permutation importance on at most this many test rows
TOP_FEATURES = 5


def write_model_card(
    path: Path, settings: Settings, training: Training, promotion: Promotion, parity: Parity | None
) -> None:
    """Markdown model card of a new champion: data, selection, test metrics, plots."""
    schema, split, best = training.schema, training.split, training.best
    scores = {c.name: c.evaluation.metrics for c in training.candidates}
    scores["trivial"] = training.trivial
    verdict = (
        "it clearly beats the trivial model."
        if clearly_better(schema.task, best.evaluation.metrics, training.trivial)
        else "**it is not clearly better than the trivial model**: more rows or better features "
        "may help before this model is worth serving."
    )
    lines = [
        f"# Model card: {settings.model.registered_name} v{promotion.version}",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make train` ({promotion.reason}).",
        "",
        "## Data",
        f"- Task: {schema.task}; target `{schema.target}` ({_target(training)})",
        f"- Rows: {len(split.train)} for training, {len(split.test)} held out for testing",
        f"- Features: {len(schema.numeric)} numeric, {len(schema.categorical)} categorical "
        "(full list with types and ranges in `metadata.json` and at `GET /metadata`)",
        *[f"- Not a feature: `{o.name}` ({o.role}: {o.reason})" for o in schema.others],
        "",
        "## How the model was chosen",
        f"Candidates are compared by {settings.model.cv}-fold cross-validation on "
        f"{best.cv_rows} training rows (mean `{best.cv_scoring}`, "
        f"{'higher' if HIGHER_IS_BETTER.get(best.cv_scoring, True) else 'lower'} is better); "
        "the test rows play no part in that choice.",
        "",
        *_table(
            ["candidate", "cross-validation score", ""],
            [
                [c.name, f"{c.cv_score:.4f}", "selected" if c is best else ""]
                for c in training.candidates
            ],
        ),
        "",
        f"## Metrics on the {best.evaluation.rows} held-out test rows",
        "",
        *_table(["metric", *scores], _metric_rows(best.evaluation.metrics, [*scores.values()])),
        "",
        f"`{best.name}` is the model served. `trivial` ignores the features (it predicts the "
        f"most frequent class, or the mean): {verdict} Each model is scored on the test rows "
        "once, for this report and the champion comparison, never to choose between candidates.",
        "",
        "## Plots (test rows)",
        *[f"![{p}]({p})" for p in sorted(best.evaluation.figures)],
        "",
        "## Serving",
        *_serving(parity),
        "",
        "## Limitations",
        "- Evaluated on a random held-out split of the same source: it says nothing about data",
        "  that drifts away from it. Watch the served traffic for that.",
        "",
    ]
    path.write_text("\n".join(lines))


def results_section(
    settings: Settings, training: Training, promotion: Promotion, scoring: str
) -> str:
    """Markdown between the markers: the problem, the data, the model against a trivial one."""
    schema, split, best = training.schema, training.split, training.best
    models = settings.bundle_dir.as_posix()
    source = mask_url(settings.data.source)
    lines = []
    if source.startswith("builtin:"):
        lines += [
            f"> **This project still runs on the demo dataset** (`{source}`). Point",
            "> `data.source` and `data.target` in `config.yaml` at your own data (see",
            "> [Use your own data](#use-your-own-data)), then `make train` rewrites this section.",
            "",
        ]
    features = main_features(training, scoring, settings.random_state)
    lines += [
        f"- **Problem**: {schema.task} of `{schema.target}` ({_target(training)})",
        f"- **Data**: `{source}`, {len(split.train) + len(split.test)} rows "
        f"({len(split.train)} to train, {len(split.test)} held out), {len(schema.names)} features",
        f"- **Model**: {settings.model.family.replace('_', ' ')}, registered version "
        f"{promotion.version}",
        "",
        *_table(
            ["test metric", "this model", "trivial model (ignores the features)"],
            _metric_rows(best.evaluation.metrics, [best.evaluation.metrics, training.trivial]),
        ),
        "",
        "Main features (how much the test score drops when the feature is shuffled): "
        + ", ".join(f"`{name}` {score:.3f}" for name, score in features)
        + ".",
        "",
        *(f"![{Path(p).stem}]({models}/{p})" for p in sorted(best.evaluation.figures)),
        "",
        f"How it was chosen, all candidates and limitations: [model card]({models}/model_card.md).",
    ]
    return "\n".join(lines)


def main_features(training: Training, scoring: str, seed: int) -> list[tuple[str, float]]:
    """The features whose shuffling hurts the test score most (permutation importance)."""
    schema, test = training.schema, training.split.test
    rows = test.sample(n=min(IMPORTANCE_ROWS, len(test)), random_state=seed)
    X, y = schema.model_input(rows), rows[schema.target]
    result = permutation_importance(
        training.best.model, X, y, scoring=scoring, n_repeats=5, random_state=seed
    )
    ranked = sorted(zip(schema.names, result.importances_mean, strict=True), key=lambda x: -x[1])
    return [(name, float(score)) for name, score in ranked[:TOP_FEATURES]]


def write_results(
    settings: Settings, training: Training, promotion: Promotion, scoring: str
) -> None:
    """Replace the text between the markers in README.md (none: a log line)."""
    readme = Path("README.md")
    if not readme.is_file():
        return
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        log.info("No %s ... %s markers in %s: results not written there.", START, END, readme)
        return
    section = results_section(settings, training, promotion, scoring)
    readme.write_text(text[: start + len(START)] + "\n" + section + "\n" + text[end:])
    log.info("README.md: the Results section now shows v%s.", promotion.version)


def _serving(parity: Parity | None) -> list[str]:
    if parity is None:
        return ["Served as the scikit-learn pipeline (serving.runtime: sklearn)."]
    labels = ""
    if parity.label_agreement is not None:
        labels = f"; labels the same on {parity.label_agreement:.2%} of rows"
        labels += f" (the {parity.label_ties} others are ties)" if parity.label_ties else ""
    return [
        "Served as `model.onnx` on onnxruntime (serving.runtime: onnx). Checked against the",
        f"pipeline on the {parity.rows} test rows: largest difference {parity.max_abs_diff:.2g}"
        f" (tolerance {parity.tolerance:.0e}){labels}.",
    ]


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    return [f"| {' | '.join(row)} |" for row in [header, ["---"] * len(header), *rows]]


def _metric_rows(metrics: Iterable[str], scores: list[dict[str, float]]) -> list[list[str]]:
    return [[m, *(f"{s.get(m, float('nan')):.4f}" for s in scores)] for m in metrics]


def _target(training: Training) -> str:
    """The target in training: each class's share, or the spread of its values."""
    target = training.split.train[training.schema.target]
    if training.schema.task == "classification":
        shares = target.value_counts(normalize=True)
        return ", ".join(f"{label} {share:.0%}" for label, share in shares.items())
    return f"mean {target.mean():.3g}, from {target.min():.3g} to {target.max():.3g}"
