"""The uci_methods study's table for one UCI table: one row per method (and variant) from the
summaries that `run.sh` had vnnlab-compare log to each sweep's parent run, then the published
columns of `published.csv` beside them. Per row: test log-likelihood per point (LL = −test/nll)
and RMSE in the target's units, mean ± s.e. over the splits, coverage of the 95% interval.

    python experiments/uci_methods/table.py boston --tracking-uri sqlite:///mlflow.db

`boston` picks the sweeps whose data.path names boston.csv (or .parquet, ...) and the
published rows of boston.
"""

import argparse
import csv
import tempfile
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vnnlab import tags
from vnnlab.sweep.aggregate import SUMMARY_CSV

PUBLISHED = Path(__file__).with_name("published.csv")
# overrides every sweep of run.sh shares, or that the summary already splits by
NOT_A_VARIANT = ("+experiment=", "data.path=", "data.split_column=", "data.train_on_val=",
                 "trainer.max_epochs=", "inference=", "model.learn_sigma2=optimal")  # fmt: skip


def study_sweeps(client: MlflowClient, table: str) -> list[Run]:
    """The FINISHED sweep parents over `<table>.csv`, oldest first."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    query = f"tags.`{tags.SWEEP_ROLE}` = '{tags.PARENT}' and attributes.status = 'FINISHED'"
    parents = client.search_runs(experiments, query, max_results=1000)
    ours = [run for run in parents if table_of_sweep(run) == table]
    return sorted(ours, key=lambda run: run.info.start_time)


def table_of_sweep(sweep: Run) -> str | None:
    """The name of the file its data.path override names, without the suffix."""
    for word in sweep.data.tags[tags.SWEEP_OVERRIDES].split():
        if word.startswith("data.path="):
            return Path(word.removeprefix("data.path=")).stem
    return None


def rows_of(client: MlflowClient, sweep: Run) -> list[str]:
    """One markdown row per row of the sweep's summary.csv (none if it was never summarised)."""
    overrides = sweep.data.tags[tags.SWEEP_OVERRIDES].split()
    variant = " ".join(word for word in overrides if not word.startswith(NOT_A_VARIANT))
    method = next(word for word in overrides if word.startswith("inference=")).split("=")[1]
    with tempfile.TemporaryDirectory() as scratch:
        try:
            path = client.download_artifacts(sweep.info.run_id, SUMMARY_CSV, scratch)
        except (MlflowException, OSError):  # never summarised: vnnlab-compare was not run
            return []
        with open(path, encoding="utf-8") as file:
            summary = list(csv.DictReader(file))
    lines = []
    for row in summary:
        name = f"`{row.get('inference') or method}` {variant}".strip()
        ll = f"{-float(row['test/nll mean']):.2f} ± {float(row['test/nll se']):.2f}"
        rmse = f"{float(row['test/rmse mean']):.2f} ± {float(row['test/rmse se']):.2f}"
        coverage = f"{float(row['test/coverage95 mean']):.3f}"
        lines.append(f"| {name} | {ll} | {rmse} | {coverage} | {row['n']} |")
    return lines


def published_rows(table: str) -> list[str]:
    with PUBLISHED.open(encoding="utf-8") as file:
        rows = [row for row in csv.DictReader(file) if row["table"] == table]
    return [f"| {row['column']} | {float(row['ll']):.2f} ± {float(row['ll_pm']):.2f} "
            f"| {float(row['rmse']):.2f} ± {float(row['rmse_pm']):.2f} | ± is {row['pm']} | "
            f"{row['source']} |" for row in rows]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", help="the CSV's name without .csv (boston, concrete, ...)")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    args = parser.parse_args()
    client = MlflowClient(args.tracking_uri)
    print("| method | LL | RMSE | coverage95 | splits |\n|---|---:|---:|---:|---:|")
    for sweep in study_sweeps(client, args.table):
        print("\n".join(rows_of(client, sweep)))
    print("\n| published | LL | RMSE | | source |\n|---|---:|---:|---|---|")
    print("\n".join(published_rows(args.table)))


if __name__ == "__main__":
    main()
