"""The training and monitoring loops as Prefect flows, calling the stages as tasks.

    training     data -> fit -> gate -> export                        make pipeline
    monitoring   drift + live quality -> alert; then judge the         make pipeline FLOW=monitoring
                 challenger (promote it when it wins on the logged
                 traffic); with none, or one that lost, run `training`
                 on drift or degradation

A step that reads a database or talks to MLflow is retried after an error that may pass (a server
hiccup), never after a UserError: the run ends Failed with its one-line message. schedule.py runs
both on the crons of config.yaml.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import State, Task, flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from ..bundle import METADATA_FILE
from ..config import Settings, get_settings
from ..errors import UserError
from ..metrics import is_better, primary_metric
from ..monitoring import alerts, compare, drift, quality
from ..pipeline import data, lifecycle, train

P = ParamSpec("P")
R = TypeVar("R")


def transient(task: Any, task_run: Any, state: State[Any]) -> bool:
    """Retry unless the step raised a UserError: bad config or data fails the same way again."""
    return not isinstance(state.result(raise_on_failure=False), UserError)


def step(fn: Callable[P, R], name: str | None = None, retries: int = 2) -> Task[P, R]:
    """A task that calls a stage function: tried again after 10 s, then 60 s, when the error may
    pass. NO_CACHE: each run does the work again (its inputs are not worth hashing)."""
    return Task(
        fn,
        name=name,
        retries=retries,
        retry_delay_seconds=[10, 60],
        retry_condition_fn=transient,
        cache_policy=NO_CACHE,
    )


prepare = step(data.prepare, name="data")
fit = step(train.fit, retries=1)  # MLflow's client retries its own calls; minutes of search
gate = step(train.gate)
export = step(train.export)
check_drift = step(drift.monitor, name="drift")
check_quality = step(quality.check_quality, name="quality")


def compare_or_wait(settings: Settings) -> compare.Comparison | str:
    """The comparison, or why there is none yet (no traffic of the challenger): the loop waits,
    nothing failed."""
    try:
        return compare.compare(settings)
    except compare.CompareError as exc:
        return str(exc)


compare_roles = step(compare_or_wait, name="compare")
promote = step(lifecycle.promote, name="promote")


@flow(name="training")
def training() -> str | State[Any]:
    """Prepare the data, fit and select, register against the champion, export."""
    try:
        settings = get_settings()
        prepare(settings)
        result = fit(settings)
        promotion = gate(settings, result)
        folder = export(settings, result, promotion)
    except UserError as exc:
        return Failed(message=str(exc))
    role = "champion" if promotion.promoted else "challenger"
    rows = [
        {"candidate": c.name, "cv": round(c.cv_score, 4), "selected": c is result.best}
        | {metric: round(value, 4) for metric, value in c.evaluation.metrics.items()}
        for c in result.candidates
    ]
    summary = f"v{promotion.version} is the {role}, in {folder}/: {promotion.reason}"
    create_table_artifact(table=rows, key="training-results", description=summary)
    card = folder / "model_card.md"  # a challenger gets its card when it is promoted
    text = card.read_text() if card.is_file() else f"Challenger v{promotion.version}: {summary}"
    create_markdown_artifact(markdown=text, key="model-card", description=str(card))
    return summary


@flow(name="monitoring")
def monitoring() -> str | State[Any]:
    """Drift and live quality of the logged traffic; then act on what they found."""
    try:
        settings = get_settings()
        found, live = check_drift(settings), check_quality(settings)
        alerts.notify(settings, found, live)  # best effort: a failed webhook is a log line
        verdict, lost = None, True
        if (settings.challenger_dir / METADATA_FILE).is_file():
            verdict, lost = judge(settings)
        if lost and (found.drift_detected or live.degraded):  # a new challenger replaces it
            state = training(return_state=True)
            if state.is_failed():  # returned as it is, it would say "1/1 states failed"
                return Failed(message=state.message)
            outcome = "; ".join(filter(None, [verdict, f"retrained: {state.result()}"]))
        else:
            outcome = verdict or "no drift, no degradation, no challenger: nothing to do"
    except UserError as exc:
        return Failed(message=str(exc))
    create_markdown_artifact(
        key="monitoring",
        markdown=f"- Drift: {found.drifted_share:.0%} of the columns (threshold "
        f"{found.drift_share_threshold:.0%}), {found.rows_compared} rows\n"
        f"- Live quality: {live.message}\n- Outcome: {outcome}\n",
        description=f"Reports in {settings.monitoring.reports_dir}/",
    )
    get_run_logger().info("Outcome: %s", outcome)
    return outcome


def judge(settings: Settings) -> tuple[str, bool]:
    """The challenger against the champion on the primary metric of the labelled live rows (once
    both have orchestration.min_challenger_rows): promote it (auto), or say that it wins (manual:
    an alert says `make promote`), or why there is no verdict yet; and whether it lost."""
    result = compare_roles(settings)
    if isinstance(result, str):
        return result, False
    config, ours, theirs = settings.orchestration, result.champion, result.challenger
    version, metric = theirs.version, primary_metric(result.task)
    if min(ours.labelled, theirs.labelled) < config.min_challenger_rows:
        return (
            f"challenger v{version} has {theirs.labelled} labelled rows, "
            f"{config.min_challenger_rows} are needed (orchestration.min_challenger_rows)"
        ), False
    if not is_better(result.task, theirs.live[metric], ours.live[metric]):
        return f"challenger v{version} does not beat the champion on the logged traffic", True
    if config.promote == "auto":
        return f"promoted challenger v{promote(settings)}: reload the service (kill -HUP)", False
    line = f"Challenger v{version} beats the champion on the logged traffic: run `make promote`."
    alerts.announce(settings, [line])
    return line, False


FLOWS = {"training": training, "monitoring": monitoring}


def run(name: str) -> State[Any]:
    """One run of a flow (`make pipeline FLOW=...`); its final state."""
    if name not in FLOWS:
        raise UserError(f"No flow {name!r}: use FLOW=training or FLOW=monitoring.")
    state: State[Any] = FLOWS[name](return_state=True)
    return state
