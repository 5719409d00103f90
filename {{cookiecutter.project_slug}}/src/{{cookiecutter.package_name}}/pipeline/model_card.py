"""The model card: what was trained on which rows, how it was chosen, how well it does."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ..schema import Schema
from .onnx_export import Parity
from .processed import Split
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
    cv_folds: int,
    parity: Parity | None = None,
) -> None:
    """Markdown model card: data, how the candidate was selected, test metrics, plots."""
    champion = promotion.champion_evaluation
    metrics = list(champion.metrics)
    columns = ["champion", *(c.name for c in candidates)]
    evaluations = [champion, *(c.evaluation for c in candidates)]
    rows = [
        f"| {metric} | "
        + " | ".join(f"{e.metrics.get(metric, float('nan')):.4f}" for e in evaluations)
        + " |"
        for metric in metrics
    ]
    cv_rows = [
        f"| {c.name} | {c.cv_score:.4f} | {'selected' if c is selected else ''} |"
        for c in candidates
    ]
    outcome = (
        f"It beat the previous champion on the test rows and is now v{promotion.version}."
        if promotion.promoted
        else f"It was registered as v{promotion.version} but did not beat champion "
        f"v{promotion.champion_version} on the test rows, which keeps serving."
    )
    lines = [
        f"# Model card: {name} v{promotion.champion_version}",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make train`.",
        "",
        "## Data",
        f"- Task: {schema.task}; target `{schema.target}` ({_target_summary(split, schema)})",
        f"- Rows: {len(split.train)} for training, {len(split.test)} held out for testing",
        f"- Features: {len(schema.numeric)} numeric, {len(schema.categorical)} categorical "
        "(full list with types and ranges in `metadata.json` and at `GET /metadata`)",
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
        f"`{selected.name}` was selected. {outcome}",
        "",
        f"## Metrics on the {champion.rows} held-out test rows",
        "",
        "| metric | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
        *rows,
        "",
        "`champion` is the registered model now serving (alias `@champion`); the other columns",
        "are this run's candidates. Each model is scored on the test rows once: for this report",
        "and for the champion comparison, never for choosing between candidates.",
        "",
        "## Plots (test rows)",
        *[f"![{p}]({p})" for p in sorted(champion.figures)],
        "",
        *_serving_lines(parity),
        "## Limitations",
        "- Evaluated on a random held-out split of the same source: it says nothing about data",
        "  that drifts away from it. Run `make monitor` on live traffic to watch for that.",
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
