"""A sweep's parent run as the place a team looks first. Its description (the tag
`mlflow.note.content`, which MLflow shows as Markdown at the top of the run's page) is the
comparison table, best first; and it carries the best child's headline metrics (every test/
metric, val/loss and the objective: the comparison's columns) as its own metrics, with that
child's run id and name as tags, so that the experiment's run list shows each sweep's result
in the same columns as its runs.

The best child is the best FINISHED one by the sweep's objective: the Optuna sweeper's
(`hydra.sweeper.objective` and `direction`) when there is one, else val/loss minimised (the
sweeper's default too: a choice made on validation data, not on the test set it reports) or,
when the children were fitted by different inference methods or are different models (whose
losses are different quantities: a deep ensemble's sums its members'), val/nll minimised, the
predictive's negative log-likelihood, one quantity for every method.

A sweep over repeated splits or seeds (aggregate.REPEATED) is a study, and picking its best
split is no result: its description is the summary table instead, one row per setting of the
other swept keys with each metric's mean ± s.e. over the repeats, best mean objective first,
and its metrics are that row's means (`test/nll`) and standard errors (`test/nll_se`). When
the sweep refits each setting on train + val beside it (aggregate.REFIT), the best row is
chosen among the settings as fitted on train alone and the headline is its refit's.
"""

import math
import time
from dataclasses import dataclass
from typing import Any

from mlflow.entities import Metric, Run, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH
from omegaconf import DictConfig, OmegaConf

from vnnlab import tags
from vnnlab.sweep.aggregate import (
    REFIT,
    REPEATED,
    Estimate,
    headline_of,
    refitted,
    repeated_key,
    summarize,
)
from vnnlab.sweep.compare import (
    SHOWN_BESIDE_TEST,
    child_runs,
    is_number,
    sort_rows,
    swept_parameters,
    table_of,
    to_markdown,
)


@dataclass(frozen=True)
class Objective:
    """What makes one child of a sweep better than another."""

    metric: str = "val/loss"
    direction: str = "minimize"  # minimize | maximize
    chosen: bool = False  # set by the sweeper's config; else the default, which may adapt

    @classmethod
    def of(cls, config: DictConfig) -> "Objective":
        """The sweeper's objective (`hydra.sweeper.objective`, `direction`), else the default."""
        metric = OmegaConf.select(config, "hydra.sweeper.objective", default=None)
        if not metric:
            return cls()
        direction = OmegaConf.select(config, "hydra.sweeper.direction", default=None)
        return cls(str(metric), str(direction or "minimize"), chosen=True)

    def for_children(self, children: list[Run]) -> "Objective":
        """The default becomes val/nll when the children's losses are different quantities
        (several models or inference methods) and every child that finished logged val/nll."""
        if self.chosen:
            return self
        fitted = {(c.data.tags.get(tags.MODEL), c.data.tags.get(tags.INFERENCE)) for c in children}
        finished = [c for c in children if c.info.status == "FINISHED"]
        if len(fitted) > 1 and finished and all("val/nll" in c.data.metrics for c in finished):
            return Objective("val/nll")
        return self

    def __str__(self) -> str:
        return f"{self.metric} ({self.direction})"


def best_row(rows: list[dict[str, Any]], objective: Objective) -> dict[str, Any] | None:
    """The FINISHED row with the best finite value of the objective; None if there is none."""
    scored = [
        row for row in rows if row["status"] == "FINISHED" and is_number(row.get(objective.metric))
    ]
    if not scored:
        return None
    pick = max if objective.direction == "maximize" else min
    return pick(scored, key=lambda row: row[objective.metric])


def headline_metrics(metrics: dict[str, float], objective: Objective) -> dict[str, float]:
    """A child's metrics that the parent carries: test/*, val/loss and the objective."""
    keys = {objective.metric, *SHOWN_BESIDE_TEST}
    return {
        key: value
        for key, value in metrics.items()
        if (key.startswith("test/") or key in keys) and is_number(value)
    }


def description(
    rows: list[dict[str, Any]], best: dict[str, Any] | None, objective: Objective
) -> str:
    """The parent's Markdown description: one line on the best child, then the table (best
    first), cut to whole rows so that it fits in a tag (the full table is comparison.md)."""
    finished = sum(row["status"] == "FINISHED" for row in rows)
    if best is None:
        head = f"**No finished run has {objective.metric}** ({finished} of {len(rows)} finished)."
    else:
        head = (
            f"**Best of {len(rows)} runs** ({finished} finished) by {objective}: "
            f"`{best['name']}`, {objective.metric} = {best[objective.metric]:.4g}, "
            f"run `{best['run_id']}`."
        )
        rows = sort_rows(rows, objective.metric, objective.direction == "maximize")
    lines = to_markdown(rows).splitlines()
    text = "\n".join([head, "", *lines])
    shown = len(lines) - 2
    while len(text) > MAX_TAG_VAL_LENGTH and shown > 1:
        shown -= 1
        more = f"\n\n… and {len(rows) - shown} more rows in the artifact comparison.md."
        text = "\n".join([head, "", *lines[: 2 + shown]]) + more
    return text


def publish(tracking_uri: str, parent_run_id: str, objective: Objective) -> str:
    """Write the description, the best child's headline metrics and its id (a study: the
    summary's) to the parent, in one request; returned: what the terminal shows of it."""
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    children = child_runs(client, parent)
    objective = objective.for_children(children)
    swept = swept_parameters(parent, children)
    rows = table_of(children, swept, also=[objective.metric])
    over = repeated_key(swept)
    if over is not None and len({row.get(over) for row in rows}) > 1:
        return _publish_study(client, parent_run_id, rows, swept, over, objective)
    best = best_row(rows, objective)
    run_tags = [
        RunTag(tags.NOTE, description(rows, best, objective)),
        RunTag(tags.SWEEP_OBJECTIVE, str(objective)),
    ]
    metrics: list[Metric] = []
    if best is not None:
        [child] = [child for child in children if child.info.run_id == best["run_id"]]
        now = int(time.time() * 1000)
        headline = headline_metrics(child.data.metrics, objective)
        metrics = [Metric(key, value, now, 0) for key, value in sorted(headline.items())]
        run_tags += [
            RunTag(tags.SWEEP_BEST_RUN, best["run_id"]),
            RunTag(tags.SWEEP_BEST, best["name"]),
        ]
    client.log_batch(parent_run_id, metrics=metrics, tags=run_tags)
    if best is None:
        return f"no finished run has {objective.metric}"
    value = best[objective.metric]
    return f"best by {objective}: [{best['name']}] {value:.6g}, run {best['run_id']}"


def study_summary(
    rows: list[dict[str, Any]], swept: list[str], over: str, objective: Objective
) -> list[dict[str, Any]]:
    """Over the FINISHED rows: per setting of the swept keys other than `over`, each metric's
    Estimate over the repeats (aggregate.summarize), the best mean objective first."""
    finished = [row for row in rows if row["status"] == "FINISHED"]
    if not finished:
        return []
    numbers = {key: value for row in finished for key, value in row.items() if is_number(value)}
    metrics = list(dict.fromkeys([objective.metric, *sorted(headline_metrics(numbers, objective))]))
    summary = summarize(finished, over, metrics, [key for key in swept if key != over])
    worst = -math.inf if objective.direction == "maximize" else math.inf

    def score(row: dict[str, Any]) -> float:
        estimate = row.get(objective.metric)
        return estimate.mean if isinstance(estimate, Estimate) else worst

    return sorted(summary, key=score, reverse=objective.direction == "maximize")


def study_description(
    summary: list[dict[str, Any]], rows: list[dict[str, Any]], over: str, objective: Objective
) -> str:
    """The study's answer in Markdown: a line on what was summarised, then the summary table."""
    finished = sum(row["status"] == "FINISHED" for row in rows)
    repeats = len({row.get(over) for row in rows})
    head = (
        f"**Mean ± s.e. over {repeats} {REPEATED[over]}** ({finished} of {len(rows)} runs "
        f"finished), one row per setting, best mean {objective} first."
    )
    if not summary:
        return f"**No run finished** (0 of {len(rows)}): nothing to summarise over {over}."
    return "\n".join([head, "", to_markdown(summary)])[:MAX_TAG_VAL_LENGTH]


def headline_row(summary: list[dict[str, Any]], swept: list[str]) -> dict[str, Any]:
    """The best summary row (they come best first); with REFIT swept, the refit of the best
    setting fitted on train alone (a refit's val/* metrics are in-sample), when there is one."""
    if REFIT not in swept:
        return summary[0]
    fitted = [row for row in summary if str(row.get(REFIT)).lower() != "true"]
    return (refitted(summary, fitted[:1], REFIT) or fitted or summary)[0]


def _publish_study(
    client: MlflowClient,
    parent_run_id: str,
    rows: list[dict[str, Any]],
    swept: list[str],
    over: str,
    objective: Objective,
) -> str:
    """The parent of a study: its description the summary table, its metrics the best row's
    means and standard errors, that row's setting as the tag `vnnlab.sweep.best`; returned:
    the summary table and the best row, for the terminal."""
    summary = study_summary(rows, swept, over, objective)
    text = study_description(summary, rows, over, objective)
    run_tags = [RunTag(tags.NOTE, text), RunTag(tags.SWEEP_OBJECTIVE, str(objective))]
    metrics: list[Metric] = []
    if summary:
        best = headline_row(summary, swept)
        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, 0) for key, value in sorted(headline_of(best).items())]
        setting = " ".join(f"{key}={best[key]}" for key in swept if key != over)
        setting = setting or f"all {REPEATED[over]}"
        run_tags.append(RunTag(tags.SWEEP_BEST, setting))
        text += f"\nbest mean {objective}: [{setting}] {best.get(objective.metric)}"
    client.log_batch(parent_run_id, metrics=metrics, tags=run_tags)
    return text
