"""A study's result as the literature reports it: over repeated train/test splits (or seeds),
each split's hyper-parameters chosen by a validation metric, the test metrics as mean ±
standard error over the splits.

Works on the rows of a sweep's comparison table (vnnlab.sweep.compare: one dict per child
run, params and metrics by name). Two questions:
- `--over data.split_column --select val/nll`: per split, the row with the best validation
  metric; then mean ± s.e. of each test metric over the chosen rows (one line);
- `--over seed`: per setting of the other swept keys, mean ± s.e. over seeds (one line each).
A sweep over one of REPEATED's keys is such a study from the start: its parent run is named
after it and shows the second summary (vnnlab.sweep.headline).
"""

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from vnnlab.errors import BadInputError
from vnnlab.sweep.compare import csv_text, is_number, to_markdown

# Keys whose values repeat one experiment (a study's mean ± s.e. is over them), and what
# their values are called in a parent run's name.
REPEATED = {"data.split_column": "splits", "seed": "seeds"}


# The key whose true value refits a setting on train + val (data.train_on_val): such a run's
# val/* metrics are scored on rows it trained on, so it is never chosen by them.
REFIT = "data.train_on_val"


def repeated_key(swept: Sequence[str]) -> str | None:
    """The key of REPEATED that a sweep sweeps, if any."""
    return next((key for key in REPEATED if key in swept), None)


def study_name(label: str, swept: Sequence[str], over: str, n_values: int) -> str:
    """`uci_regression: inference × model.sigma2 × 20 splits`: what the study varies (a config
    group by its name, a key in full) and over how many repeats."""
    varied = [key for key in swept if key != over]
    return f"{label}: " + " × ".join([*varied, f"{n_values} {REPEATED[over]}"])


@dataclass(frozen=True)
class Estimate:
    """The mean of n values and its standard error s/√n (s: the sample standard deviation,
    n − 1 in its denominator); se is NaN for a single value."""

    mean: float
    se: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "Estimate":
        n = len(values)
        se = statistics.stdev(values) / math.sqrt(n) if n > 1 else math.nan
        return cls(statistics.fmean(values), se, n)

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.se:.2g}"


def chosen_per_group(
    rows: Sequence[dict[str, Any]], over: str, select: str, largest: bool = False
) -> list[dict[str, Any]]:
    """Per value of `over` (a split, a seed), the row with the smallest `select` (the largest
    with `largest`), in the order the values first appear. Rows without a finite `select`
    are never chosen; a value none of whose rows has one is left out."""
    best: dict[Any, dict[str, Any]] = {}
    for row in rows:
        value, score = row.get(over), row.get(select)
        if value is None or not is_number(score):
            continue
        held = best.get(value)
        if held is None or (score > held[select] if largest else score < held[select]):
            best[value] = row
    return list(best.values())


def summarize(
    rows: Sequence[dict[str, Any]],
    over: str,
    metrics: Sequence[str],
    by: Sequence[str] = (),
    select: str | None = None,
    largest: bool = False,
    refit: str | None = None,
) -> list[dict[str, Any]]:
    """Summary rows, one per setting of the keys `by` (one in all without them): without
    `select`, over that setting's rows (one per value of `over`); with `select`, over the rows
    chosen per value of `over` among the setting's rows (chosen_per_group). With `refit`, a
    true/false key swept beside the others, the choice is made among the rows where it is
    false and the row summarised is the chosen one's refit (refitted). Each summary holds the
    `by` values, `n` and an Estimate per metric (over the rows where it is finite)."""
    if not any(row.get(over) is not None for row in rows):
        raise BadInputError(f"no run of this sweep has {over!r} to aggregate over")
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(key) for key in by), []).append(row)
    summary = []
    for key, group in groups.items():
        head = dict(zip(by, key, strict=True))
        if select is None:
            summary.append(_summary(head, group, metrics))
            continue
        candidates = [row for row in group if not (refit and _is_true(row.get(refit)))]
        chosen = chosen_per_group(candidates, over, select, largest)
        head["selected by"] = f"{'max' if largest else 'min'} {select}"
        if refit:
            chosen = refitted(group, chosen, refit)
            head["reported"] = f"its refit, {refit}=true"
        summary.append(_summary(head, chosen, metrics))
    if select is not None and not any(row["n"] for row in summary):
        raise BadInputError(f"no run of this sweep has a number for {select!r} to select by")
    return summary


# a row's columns that are neither params nor metrics (a run's, and a summary's count)
RUN_FIELDS = ("run_id", "name", "status", "duration_s", "failure", "n")


def refitted(
    rows: Sequence[dict[str, Any]], chosen: Sequence[dict[str, Any]], refit: str
) -> list[dict[str, Any]]:
    """For each chosen row (of a table or a summary), its twin with `refit` true: the row whose
    params (every column that is no metric, "/" in its name, and no RUN_FIELDS) are the same
    but for `refit`. A chosen row without a twin is left out."""

    def setting(row: dict[str, Any]) -> tuple:
        params = [key for key in row if "/" not in key and key not in RUN_FIELDS]
        return tuple(sorted((key, str(row[key])) for key in params if key != refit))

    twins = {setting(row): row for row in rows if _is_true(row.get(refit))}
    return [twins[setting(row)] for row in chosen if setting(row) in twins]


def _is_true(value: Any) -> bool:
    return str(value).strip().lower() == "true"


def _summary(
    head: dict[str, Any], rows: Sequence[dict[str, Any]], metrics: Sequence[str]
) -> dict[str, Any]:
    summary = dict(head) | {"n": len(rows)}
    for metric in metrics:
        values = [row[metric] for row in rows if is_number(row.get(metric))]
        summary[metric] = Estimate.of(values) if values else None
    return summary


def flat(summary: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Estimates as two columns each, `<metric> mean` and `<metric> se` (for CSV); a metric
    that a row lacks (a method without an ELBO) is two empty cells of those columns."""
    estimated = {key for row in summary for key, value in row.items()
                 if isinstance(value, Estimate)}  # fmt: skip
    rows = []
    for row in summary:
        out: dict[str, Any] = {}
        for key, value in row.items():
            if key in estimated:
                mean, se = (value.mean, value.se) if value is not None else (None, None)
                out |= {f"{key} mean": mean, f"{key} se": se}
            else:
                out[key] = value
        rows.append(out)
    return rows


def summary_figure(summary: Sequence[dict[str, Any]], metric: str, x: str | None) -> Figure:
    """`metric`'s mean ± s.e. against the setting `x` (one point per summary row), or, for a
    single row, as one point with its error bar."""
    points = [(row.get(x) if x else "", row[metric]) for row in summary if row.get(metric)]
    if not points:
        raise BadInputError(f"nothing to plot: no summary has a value for {metric!r}")
    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.subplots()
    labels = [str(value) for value, _ in points]
    ax.errorbar(range(len(points)), [e.mean for _, e in points], yerr=[e.se for _, e in points],
                marker="o", capsize=4, linestyle="-" if len(points) > 1 else "none")  # fmt: skip
    ax.set_xticks(range(len(points)), labels)
    ax.set_xlabel(x or "")
    ax.set_ylabel(f"{metric} (mean ± s.e.)")
    return figure


SUMMARY_MD, SUMMARY_CSV, SUMMARY_PNG = "summary.md", "summary.csv", "summary.png"


def headline_of(summary_row: dict[str, Any]) -> dict[str, float]:
    """A summary row as a parent run's metrics: `<metric>` its mean over the repeats (the
    column the run list shows) and `<metric>_se` its standard error; finite values only."""
    values: dict[str, float] = {}
    for key, value in summary_row.items():
        if isinstance(value, Estimate):
            values |= {key: value.mean, f"{key}_se": value.se}
    return {key: value for key, value in values.items() if math.isfinite(value)}


def log_summary(
    client: MlflowClient, parent_run_id: str, summary: list[dict[str, Any]], x: str | None
) -> list[str]:
    """summary.md, summary.csv and summary.png to the sweep's parent run (returned: what was
    logged); a single summary row (hyper-parameters selected per split) also as the parent's
    headline metrics (headline_of), so that the run list shows the study's result."""
    client.log_text(parent_run_id, to_markdown(summary), SUMMARY_MD)
    client.log_text(parent_run_id, csv_text(flat(summary)), SUMMARY_CSV)
    logged = [SUMMARY_MD, SUMMARY_CSV]
    estimated = [key for key, value in summary[0].items() if isinstance(value, Estimate)]
    if estimated:
        client.log_figure(parent_run_id, summary_figure(summary, estimated[0], x), SUMMARY_PNG)
        logged.append(SUMMARY_PNG)
    if len(summary) == 1:
        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, 0) for key, value in headline_of(summary[0]).items()]
        client.log_batch(parent_run_id, metrics=metrics)
    return logged
