"""The model card: what was trained on which rows, how it was chosen, how well it does."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ..processed import Split
from ..schema import Schema
from .evaluate import clearly_better
from .onnx_export import Parity
from .registry import Candidate, Promotion


def write_model_card(
    path: Path,
    *,
    name: str,
    schema: Schema,
    split: Split,
    promotion: Promotion,
    candidates: list[Candidate],
    selected: Candidate,
    trivial: dict[str, float],
    cv_folds: int,
    parity: Parity | None = None,
) -> None:
    """Markdown model card of a new champion: data, selection, test metrics, plots."""
    evaluation = selected.evaluation
    columns = [*(c.name for c in candidates), "trivial"]
    scores = [*(c.evaluation.metrics for c in candidates), trivial]
    rows = [
        f"| {metric} | " + " | ".join(f"{m.get(metric, float('nan')):.4f}" for m in scores) + " |"
        for metric in evaluation.metrics
    ]
    cv_rows = [
        f"| {c.name} | {c.cv_score:.4f} | {'selected' if c is selected else ''} |"
        for c in candidates
    ]
    verdict = (
        "it clearly beats the trivial model."
        if clearly_better(schema.task, evaluation.metrics, trivial)
        else "**it is not clearly better than the trivial model**: more rows or better features "
        "may help before this model is worth serving."
    )
    lines = [
        f"# Model card: {name} v{promotion.version}",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make train` ({promotion.reason}).",
        "",
        "## Data",
        f"- Task: {schema.task}; target `{schema.target}` ({_target_summary(split, schema)})",
        f"- Rows: {len(split.train)} for training, {len(split.test)} held out for testing",
        f"- Features: {len(schema.numeric)} numeric, {len(schema.categorical)} categorical "
        "(full list with types and ranges in `metadata.json` and at `GET /metadata`)",
        *[f"- Not a feature: `{o.name}` ({o.role}: {o.reason})" for o in schema.others],
        "",
        "## How the model was chosen",
        f"Candidates are compared by {cv_folds}-fold cross-validation on "
        f"{selected.cv_rows} training rows (mean `{selected.cv_scoring}`, higher is better); "
        "the test rows play no part in that choice.",
        "",
        "| candidate | cross-validation score | |",
        "|---|---|---|",
        *cv_rows,
        "",
        f"## Metrics on the {evaluation.rows} held-out test rows",
        "",
        "| metric | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
        *rows,
        "",
        f"`{selected.name}` is the model served. `trivial` ignores the features (it predicts the "
        f"most frequent class, or the mean): {verdict} Each model is scored on the test rows "
        "once, for this report and the champion comparison, never to choose between candidates.",
        "",
        "## Plots (test rows)",
        *[f"![{p}]({p})" for p in sorted(evaluation.figures)],
        "",
        *_serving_lines(parity),
        "## Limitations",
        "- Evaluated on a random held-out split of the same source: it says nothing about data",
        "  that drifts away from it. Watch the served traffic for that.",
        "",
    ]
    path.write_text("\n".join(lines))


def _serving_lines(parity: Parity | None) -> list[str]:
    if parity is None:
        return ["## Serving", "Served as the scikit-learn pipeline (serving.runtime: sklearn).", ""]
    labels = (
        ""
        if parity.label_agreement is None
        else f"; labels the same on {parity.label_agreement:.2%} of rows"
        + (f" (the {parity.label_ties} others are ties)" if parity.label_ties else "")
    )
    return [
        "## Serving",
        "Served as `model.onnx` on onnxruntime (serving.runtime: onnx). Checked against the",
        f"pipeline on the {parity.rows} test rows: largest difference {parity.max_abs_diff:.2g}"
        f" (tolerance {parity.tolerance:.0e}){labels}.",
        "",
    ]


def _target_summary(split: Split, schema: Schema) -> str:
    target = split.train[schema.target]
    if schema.task == "classification":
        balance = target.value_counts(normalize=True).round(3).to_dict()
        return f"classes and their share in training: {balance}"
    return (
        f"mean {target.mean():.3f}, std {target.std():.3f}, "
        f"range {target.min():.3f} to {target.max():.3f}"
    )
