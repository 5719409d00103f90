"""The model card: what was trained on what, how well, and how to read it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from .data import Split
from .schema import Schema


def write_model_card(
    path: Path,
    *,
    name: str,
    version: str,
    schema: Schema,
    split: Split,
    champion_metrics: dict[str, float],
    candidates: dict[str, dict[str, float]],
    plots: list[str],
) -> None:
    """Markdown model card: data summary, metrics of the champion vs this run's candidates."""
    columns = ["champion", *candidates]
    rows = [
        f"| {metric} | "
        + " | ".join(
            f"{m.get(metric, float('nan')):.4f}" for m in [champion_metrics, *candidates.values()]
        )
        + " |"
        for metric in champion_metrics
    ]
    target = split.train[schema.target]
    if schema.task == "classification":
        balance = target.value_counts(normalize=True).round(3).to_dict()
        target_line = f"classes and their share in training: {balance}"
    else:
        target_line = (
            f"mean {target.mean():.3f}, std {target.std():.3f}, "
            f"range {target.min():.3f} to {target.max():.3f}"
        )
    lines = [
        f"# Model card: {name} v{version}",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make train`.",
        "",
        "## Data",
        f"- Task: {schema.task}; target `{schema.target}` ({target_line})",
        f"- Rows: {len(split.train)} train, {len(split.test)} held-out test",
        f"- Features: {len(schema.numeric)} numeric, {len(schema.categorical)} categorical "
        "(full list with types and ranges in `metadata.json` and at `GET /metadata`)",
        "",
        "## Metrics on the held-out test set",
        "",
        "| metric | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
        *rows,
        "",
        "`champion` is the registered model now serving (alias `@champion`); the other",
        "columns are this training run's candidates. A candidate only becomes champion",
        "when it beats the current champion on the primary metric.",
        "",
        "## Plots",
        *[f"![{p}]({p})" for p in plots],
        "",
        "## Limitations",
        "- Evaluated on a random held-out split of the same source: it says nothing about data",
        "  that drifts away from it. Run `make monitor` on live traffic to watch for that.",
        "",
    ]
    path.write_text("\n".join(lines))
