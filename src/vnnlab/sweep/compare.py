"""A sweep's child runs as one table (markdown, CSV) and a figure of a metric against a swept
parameter, logged to the sweep's parent run: what vnnlab-compare and the end of a multirun show.

A sweep in MLflow (written by vnnlab.sweep.hydra_callback): a parent run tagged
`vnnlab.sweep.role=parent`, whose tag `vnnlab.sweep.params` lists the swept keys, and one
child run per job tagged `mlflow.parentRunId=<parent>`, with the resolved config as dotted
params and `{stage}/{term}` metrics. A row is a dict: `run_id`, `name`, params, metrics,
`status`, `duration_s`, `failure`; metric keys contain "/", config keys never do.
"""

import csv
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vnnlab import tags
from vnnlab.errors import BadInputError

SHOWN_BESIDE_TEST = ("val/loss",)  # default metric columns: every test/* metric, then these
SEARCH_PAGE = 1000
MAX_CELL = 80  # characters of text in a markdown cell (a failure reason can run to 5000)
MARKDOWN, CSV, PNG = "comparison.md", "comparison.csv", "comparison.png"


# --- finding the sweep ----------------------------------------------------------------------


def find_sweep(client: MlflowClient, sweep: str | None, experiment: str | None) -> Run:
    """The parent run with id `sweep`; without one, the latest parent run (by start time) in
    the experiment named `experiment`, or in any experiment."""
    if sweep is not None:
        return _parent_run(client, sweep)
    latest = client.search_runs(
        _experiment_ids(client, experiment),
        f"tags.`{tags.SWEEP_ROLE}` = '{tags.PARENT}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not latest:
        where = f"experiment {experiment!r}" if experiment else client.tracking_uri
        raise BadInputError(f"no sweep in {where}: run a multirun first (vnnlab-train -m ...)")
    return latest[0]


def _parent_run(client: MlflowClient, run_id: str) -> Run:
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise  # a store that cannot be read is not the user's typo
        raise BadInputError(f"no run {run_id!r} in {client.tracking_uri}") from None
    if run.data.tags.get(tags.SWEEP_ROLE) != tags.PARENT:
        parent = run.data.tags.get(tags.PARENT_RUN)
        hint = f"its sweep is {parent}" if parent else "expected the parent run of a multirun"
        raise BadInputError(f"run {run_id!r} is not a sweep: {hint}")
    return run


def _experiment_ids(client: MlflowClient, name: str | None) -> list[str]:
    if name is None:
        return [e.experiment_id for e in client.search_experiments()]
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise BadInputError(f"no experiment {name!r} in {client.tracking_uri}")
    return [experiment.experiment_id]


def child_runs(client: MlflowClient, parent: Run) -> list[Run]:
    """Every run nested under `parent`, in the order they started."""
    query = f"tags.`{tags.PARENT_RUN}` = '{parent.info.run_id}'"
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [parent.info.experiment_id],
            query,
            max_results=SEARCH_PAGE,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def swept_parameters(parent: Run, children: Sequence[Run]) -> list[str]:
    """The parent's swept keys. A swept config group (`model=vae,pca`) is no param itself: its
    choice, recorded by train() as the tag `vnnlab.<group>`, stands for it; without that tag,
    its params that differ between children do, as do all differing params when the parent
    names no key."""
    declared = [key.strip() for key in parent.data.tags.get(tags.SWEEP_PARAMS, "").split(",")]
    declared = [key for key in declared if key]
    if not declared:
        return _differing_params(children, prefix="")
    columns: list[str] = []
    for key in declared:
        named = any(_param_or_choice(child, key) is not None for child in children)
        columns += [key] if named else _differing_params(children, prefix=f"{key}.")
    return list(dict.fromkeys(columns))


def _param_or_choice(child: Run, key: str) -> str | None:
    """The child's param `key`, else its choice of the config group `key` (tag vnnlab.<key>)."""
    value = child.data.params.get(key)
    return value if value is not None else child.data.tags.get(f"{tags.GROUP_PREFIX}{key}")


def _differing_params(children: Sequence[Run], prefix: str) -> list[str]:
    keys = sorted(
        {key for child in children for key in child.data.params if key.startswith(prefix)}
    )
    return [key for key in keys if len({child.data.params.get(key) for child in children}) > 1]


# --- the table ------------------------------------------------------------------------------


def sweep_table(
    client: MlflowClient,
    parent: Run,
    metrics: Sequence[str] | None = None,
    sort_by: str | None = None,
    descending: bool = False,
) -> list[dict[str, Any]]:
    """One row per child run of `parent`: run_id, name, the swept params, `metrics` (default:
    every test/* metric any child logged, and val/loss), status, duration_s, failure. Sorted
    by `sort_by` (a metric or param; rows without it last), else by start time."""
    children = child_runs(client, parent)
    return table_of(children, swept_parameters(parent, children), metrics, sort_by, descending)


def table_of(
    children: Sequence[Run],
    params: Sequence[str],
    metrics: Sequence[str] | None = None,
    sort_by: str | None = None,
    descending: bool = False,
    also: Iterable[str | None] = (),
) -> list[dict[str, Any]]:
    """The rows of `children` with these param and metric columns; a key in `also` or
    `sort_by` that some child has as a metric or param becomes a column too."""
    metric_columns = list(metrics) if metrics is not None else _logged_metrics(children)
    params, metric_columns = _with_keys(children, params, metric_columns, [sort_by, *also])
    rows = [_row(child, params, metric_columns) for child in children]
    return sort_rows(rows, sort_by, descending) if sort_by else rows


def _logged_metrics(children: Sequence[Run]) -> list[str]:
    logged = {key for child in children for key in child.data.metrics}
    tests = sorted(key for key in logged if key.startswith("test/"))
    return tests + [key for key in SHOWN_BESIDE_TEST if key in logged]


def _with_keys(
    children: Sequence[Run], params: Sequence[str], metrics: Sequence[str], keys: Iterable
) -> tuple[list[str], list[str]]:
    params, metrics = list(params), list(metrics)
    for key in keys:
        if key is None or key in params or key in metrics:
            continue
        if any(key in child.data.metrics for child in children):
            metrics.append(key)
        elif any(_param_or_choice(child, key) is not None for child in children):
            params.append(key)
    return params, metrics


def _row(child: Run, params: Sequence[str], metrics: Sequence[str]) -> dict[str, Any]:
    info, data = child.info, child.data
    return {
        "run_id": info.run_id,
        "name": info.run_name,
        **{key: parse_param(_param_or_choice(child, key)) for key in params},
        **{key: data.metrics.get(key) for key in metrics},
        "status": info.status,
        "duration_s": (info.end_time - info.start_time) / 1000 if info.end_time else None,
        "failure": data.tags.get(tags.FAILURE) or data.tags.get(tags.STOPPED_BY, ""),
    }


def parse_param(text: str | None) -> int | float | str | None:
    """MLflow keeps params as text: "16" → 16, "1e-3" → 0.001, anything else unchanged."""
    if text is None:
        return None
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text


def sort_rows(rows: list[dict[str, Any]], key: str, descending: bool = False) -> list[dict]:
    """Rows ordered by `key`, rows without it (or with NaN) last either way; ties keep order."""
    present = [row for row in rows if not _missing(row.get(key))]
    if not present:
        raise BadInputError(
            f"no run of this sweep has {key!r} to sort by: expected one of "
            + ", ".join(columns_of(rows))
        )
    # numbers before text, so a column mixing both still sorts
    present.sort(key=lambda row: (isinstance(row[key], str), row[key]), reverse=descending)
    return present + [row for row in rows if _missing(row.get(key))]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool): a value a table can average or plot."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _plottable_x(value: Any) -> bool:
    return is_number(value) or (isinstance(value, str) and value != "")


def columns_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Every key of the rows, in first-seen order."""
    return list(dict.fromkeys(key for row in rows for key in row))


# --- markdown, CSV, figure ------------------------------------------------------------------


def to_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub table; floats with 4 significant digits, number columns right-aligned."""
    columns = list(columns) if columns is not None else columns_of(rows)
    aligned = ["---:" if _numeric_column(rows, column) else "---" for column in columns]
    lines = [
        _markdown_line([_cell(column) for column in columns]),
        _markdown_line(aligned),
        *(_markdown_line([_cell(row.get(column)) for column in columns]) for row in rows),
    ]
    return "\n".join(lines)


def _markdown_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _numeric_column(rows: Sequence[dict[str, Any]], column: str) -> bool:
    values = [row.get(column) for row in rows if row.get(column) is not None]
    return bool(values) and all(isinstance(v, int | float) for v in values)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    text = " ".join(str(value).split()).replace("|", "\\|")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """The rows as CSV with a header; floats in full precision, missing values empty."""
    buffer = io.StringIO()
    fields = list(columns) if columns is not None else columns_of(rows)
    writer = csv.DictWriter(buffer, fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_csv(
    rows: Sequence[dict[str, Any]], path: str | Path, columns: Sequence[str] | None = None
) -> None:
    Path(path).write_text(csv_text(rows, columns), encoding="utf-8")


def comparison_figure(
    rows: Sequence[dict[str, Any]], metric: str, x: str, group: str | None
) -> Figure:
    """`metric` against the parameter `x` (numbers, or text such as a model's name), one line
    per value of `group`, over the rows with a finite `metric` and an `x`."""
    plotted = [row for row in rows if _plottable_x(row.get(x)) and is_number(row.get(metric))]
    if not plotted:
        raise BadInputError(f"nothing to plot: no run has both {x!r} and a number for {metric!r}")
    return metric_against_parameter(plotted, x=x, y=metric, group=group)


def metric_against_parameter(table: list[dict], x: str, y: str, group: str | None) -> Figure:
    """y against x over a sweep's runs (rows with both keys), one line per value of `group`.
    Text x (a model's name) is a categorical axis; numeric x is logarithmic when every x > 0
    and they span more than a factor of 20."""
    rows = [row for row in table if row.get(x) is not None and row.get(y) is not None]
    lines: dict[object, list[tuple[float, float]]] = {}
    for row in rows:
        lines.setdefault(row.get(group) if group else None, []).append((row[x], row[y]))
    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.subplots()
    for key in sorted(lines, key=_numbers_first):
        xs, ys = zip(*sorted(lines[key], key=lambda point: _numbers_first(point[0])), strict=True)
        ax.plot(xs, ys, marker="o", label=None if group is None else f"{group}={key}")
    xs = [row[x] for row in rows]
    numeric = all(isinstance(value, int | float) for value in xs)
    if xs and numeric and min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if group is not None and lines:
        ax.legend(fontsize="small")
    return figure


def _numbers_first(value: object) -> tuple:
    """Sort key: numbers by value (2 before 16, not as text), then text alphabetically."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return (0, value, "") if is_number else (1, 0, str(value))


# --- a sweep's report -----------------------------------------------------------------------


def report_sweep(
    tracking_uri: str,
    parent_run_id: str,
    sort_by: str | None = None,
    metric: str | None = None,
    x: str | None = None,
    group: str | None = None,
    descending: bool = False,
) -> str:
    """Log comparison.md, comparison.csv and (when a swept param is numeric and a metric was
    logged) comparison.png to the sweep's parent run; returns the markdown table."""
    client = MlflowClient(tracking_uri)
    parent = find_sweep(client, parent_run_id, None)
    rows, _ = log_comparison(client, parent, sort_by, descending, metric, x, group)
    return to_markdown(rows)


def log_comparison(
    client: MlflowClient,
    parent: Run,
    sort_by: str | None = None,
    descending: bool = False,
    metric: str | None = None,
    x: str | None = None,
    group: str | None = None,
    also: Sequence[str | None] = (),
) -> tuple[list[dict[str, Any]], list[str]]:
    """The table, and the names of the artifacts logged to `parent`; `also`: more columns
    (a study's selection metric). Bad input is refused before anything is logged."""
    children = child_runs(client, parent)
    swept = swept_parameters(parent, children)
    rows = table_of(
        children, swept, sort_by=sort_by, descending=descending, also=(metric, x, group, *also)
    )
    axes = figure_axes(rows, swept, metric, x, group, sort_by)
    figure = comparison_figure(rows, *axes) if axes else None
    run_id = parent.info.run_id
    client.log_text(run_id, to_markdown(rows), MARKDOWN)
    client.log_text(run_id, csv_text(rows), CSV)
    if figure is None:
        return rows, [MARKDOWN, CSV]
    client.log_figure(run_id, figure, PNG)
    return rows, [MARKDOWN, CSV, PNG]


def figure_axes(
    rows: Sequence[dict[str, Any]],
    swept: Sequence[str],
    metric: str | None,
    x: str | None,
    group: str | None,
    sort_by: str | None = None,
) -> tuple[str, str, str | None] | None:
    """(metric, x, group) for the figure. Defaults: metric = sort_by when it is a metric, else
    the first test/ column; x = the first numeric swept param (else the first swept one, such
    as a model's name); group = the next swept param.
    None when the defaults find nothing to plot; a key asked for that no row has is refused."""
    asked = [key for key in (metric, x, group) if key is not None]
    for key in asked:
        if all(_missing(row.get(key)) for row in rows):
            raise BadInputError(f"no run of this sweep has {key!r} to plot")
    if metric is None and sort_by is not None and "/" in sort_by:
        metric = sort_by
    metric = metric or next((c for c in columns_of(rows) if c.startswith("test/")), None)
    numeric = [key for key in swept if any(is_number(row.get(key)) for row in rows)]
    x = x or next(iter([*numeric, *swept]), None)
    if metric is None or x is None:
        return None
    group = group or next((key for key in swept if key != x), None)
    plottable = any(_plottable_x(row.get(x)) and is_number(row.get(metric)) for row in rows)
    return (metric, x, group) if plottable or asked else None
